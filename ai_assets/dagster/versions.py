"""An enrichment's code version covers the resource it prompts, not only the asset's own arguments.

An asset's ``code_version`` is fixed when it is defined, before its resources are known, so a model changed on the
resource (``OpenAICompatibleResource(model=...)``) would not make the asset stale. ``provider_versions(defs)``
folds each enrichment asset's provider settings that decide an answer (``ProviderResource.answer_fields``: the
model, the endpoint, the embedding model; not rates, keys or devices) into its code version, so Dagster shows it
stale when one changes. Definitions that bind resources at the top (``definitions.py``, ``load_from_defs_folder``)
are passed through it once.
"""

from __future__ import annotations

import warnings
from typing import Any

import dagster as dg

from ai_assets.dagster.common import fingerprint

PROVIDER_KEY = "ai/provider_key"
"""Metadata on every enrichment asset: the resource key of its provider."""


def provider_versions(defs: dg.Definitions) -> dg.Definitions:
    """``defs`` with every enrichment asset's code version covering its provider resource's answer settings."""
    resources = dict(defs.resources or {})

    def versioned(spec: dg.AssetSpec) -> dg.AssetSpec:
        key = _text(spec.metadata.get(PROVIDER_KEY))
        resource = resources.get(key) if key else None
        settings = getattr(resource, "answer_settings", None)
        if spec.code_version is None or not callable(settings):
            return spec
        return spec.replace_attributes(code_version=fingerprint(asset=spec.code_version, provider=settings()))

    with warnings.catch_warnings():  # Definitions.map_asset_specs is marked preview; the tests hold its behaviour
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return defs.map_asset_specs(func=versioned)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))
