"""The demo's definitions, loaded from the YAML (and Python) files under defs/; provider_versions makes an asset
stale when the model of the resource it prompts changes; with_store_kinds shows each asset's store (the IO manager
its key is bound to in resources/defs.yaml) as its kind."""

from pathlib import Path

import dagster as dg

from ai_assets.dagster import provider_versions, with_store_kinds

defs = with_store_kinds(provider_versions(dg.load_from_defs_folder(project_root=Path(__file__).resolve().parents[2])))
