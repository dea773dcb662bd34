"""The resources component: providers, IO managers and the journal by key (see ai_assets.dagster.registry)."""

from typing import Annotated, Any

import dagster as dg
from pydantic import Field

from ai_assets.dagster.components.common import under_out
from ai_assets.dagster.registry import Provider, Store, build_resource
from ai_assets.dagster.resources import (
    ResultCacheResource,
)


def _resolved_entries(context: dg.ResolutionContext, entries: dict[str, dg.Model]) -> dict[str, dg.Model]:
    """Each entry with its templates (``{{ env('NAME') }}``) resolved at every depth: Dagster resolves a nested
    model's strings only when the model is itself resolvable, and a union of kinds is not."""
    return {key: type(entry).model_validate(context.at_path(key).resolve_value(entry.model_dump(exclude_unset=True)))
            for key, entry in entries.items()}


class ResourcesComponent(dg.Component, dg.Model, dg.Resolvable):
    """Providers, IO managers and the journal, by key."""

    out: str | None = Field(default=None, description="The folder or URI relative roots are under")
    providers: Annotated[dict[str, Provider], dg.Resolver(_resolved_entries, model_field_type=dict[str, Provider])] \
        = Field(default_factory=dict, description="By resource key: kind plus that resource's own fields")
    io_managers: Annotated[dict[str, Store], dg.Resolver(_resolved_entries, model_field_type=dict[str, Store])] \
        = Field(default_factory=dict, description="By IO manager key: kind plus that IO manager's own fields")
    journal: str | None = Field(default=None, description="A SQLite file, object-store URI or Postgres URL")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        resources: dict[str, Any] = {key: build_resource(p) for key, p in self.providers.items()}
        resources.update({key: build_resource(s, root=under_out(self.out, s.root))
                          for key, s in self.io_managers.items()})
        resources["ai_cache"] = ResultCacheResource(path=under_out(self.out, self.journal) if self.journal else None)
        return dg.Definitions(resources=resources)
