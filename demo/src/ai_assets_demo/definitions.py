"""The demo's definitions, loaded from the YAML (and Python) files under defs/."""

from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(project_root=Path(__file__).resolve().parents[2])
