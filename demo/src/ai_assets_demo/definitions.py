"""The demo's definitions, loaded from the YAML (and Python) files under defs/; provider_versions makes an asset
stale when the model of the resource it prompts changes; with_store_kinds shows each asset's store (the IO manager
its key is bound to in resources/defs.yaml) as its kind."""

from pathlib import Path

import dagster as dg

from ai_assets.dagster import provider_versions, with_store_kinds

# Every step of a run in one process, so each model loads once per run (as the root definitions.py says why).
defs = with_store_kinds(provider_versions(dg.Definitions.merge(
    dg.load_from_defs_folder(project_root=Path(__file__).resolve().parents[2]),
    dg.Definitions(executor=dg.in_process_executor))))
