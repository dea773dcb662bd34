"""The demo's schedule and sensor (Python beside the YAML: dg loads both)."""

from pathlib import Path

import dagster as dg

from ai_assets.dagster import landing_folder_sensor, partitioned_schedule

DATA = Path(__file__).resolve().parents[5] / "data"
REVIEWS = ["raw_reviews", "clean_reviews", "review_insights", "review_embeddings", "review_topics"]

daily_reviews = partitioned_schedule("daily_reviews", REVIEWS,
                                     dg.DailyPartitionsDefinition(start_date="2024-11-01", end_date="2024-11-04"),
                                     hour_of_day=1)
landing_sensor = landing_folder_sensor("landing_sensor", folder=DATA / "landing", pattern="*.jsonl",
                                       partitions_def=dg.DynamicPartitionsDefinition(name="landing_files"),
                                       assets=["landing_reviews", "landing_topics"])
