"""The resources component: providers, IO managers and the journal by key (see ai_assets.dagster.registry)."""

from typing import Annotated, Any

import dagster as dg
from pydantic import Field

from ai_assets.dagster.components.common import under_out
from ai_assets.dagster.registry import Provider, Store, build_resource
from ai_assets.dagster.resources import (
    FailoverResource,
    ResultCacheResource,
)


def _resolved_entries(context: dg.ResolutionContext, entries: dict[str, dg.Model]) -> dict[str, dg.Model]:
    """Each entry with its templates (``{{ env('NAME') }}``) resolved at every depth: Dagster resolves a nested
    model's strings only when the model is itself resolvable, and a union of kinds is not."""
    return {key: type(entry).model_validate(context.at_path(key).resolve_value(entry.model_dump(exclude_unset=True)))
            for key, entry in entries.items()}


class FailoverEntry(dg.Model):
    """A provider key's fallbacks: the keys of other providers of this component, tried in order when it fails
    transiently (see ``FailoverResource``)."""

    fallbacks: list[str] = Field(description="Keys of other providers (one to three), tried in order")
    threshold: int = Field(default=5, description="Consecutive transient failures that open a circuit breaker")
    cooldown_s: float = Field(default=30.0, description="Seconds a breaker stays open before one probe")
    store: str | None = Field(default=None, description="Where the breakers live (default: the primary's "
                                                        "rate_limit_store, else this process only)")


def _failover(key: str, entry: FailoverEntry, providers: dict[str, Any]) -> FailoverResource:
    missing = [k for k in [key, *entry.fallbacks] if k not in providers]
    problem = ("no provider " + repr(missing) if missing else "a provider cannot be its own fallback"
               if key in entry.fallbacks else None if 1 <= len(entry.fallbacks) <= 3 else "give 1 to 3 fallbacks")
    if problem is not None:
        raise dg.DagsterInvalidDefinitionError(f"failover.{key}: {problem} (providers: {sorted(providers)})")
    chain = [providers[k] for k in entry.fallbacks]
    return FailoverResource(primary=providers[key], fallback=chain[0], fallback_2=(chain[1:2] or [None])[0],
                            fallback_3=(chain[2:3] or [None])[0], breaker_threshold=entry.threshold,
                            breaker_cooldown_s=entry.cooldown_s, breaker_store=entry.store)


class ResourcesComponent(dg.Component, dg.Model, dg.Resolvable):
    """Providers, IO managers and the journal, by key."""

    out: str | None = Field(default=None, description="The folder or URI relative roots are under")
    providers: Annotated[dict[str, Provider], dg.Resolver(_resolved_entries, model_field_type=dict[str, Provider])] \
        = Field(default_factory=dict, description=(
            "By resource key: kind (a built-in one, or a provider another package registers in the entry-point "
            "group ai_assets.providers) plus that resource's own fields"))
    io_managers: Annotated[dict[str, Store], dg.Resolver(_resolved_entries, model_field_type=dict[str, Store])] \
        = Field(default_factory=dict, description="By IO manager key: kind plus that IO manager's own fields")
    journal: str | None = Field(default=None, description="A SQLite file, object-store URI or Postgres URL")
    failover: dict[str, FailoverEntry] = Field(default_factory=dict, description=(
        "By provider key: the providers that answer its rows when it fails transiently (5xx, 529, timeouts)"))

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        resources: dict[str, Any] = {key: build_resource(p) for key, p in self.providers.items()}
        resources.update({key: _failover(key, entry, dict(resources)) for key, entry in self.failover.items()})
        resources.update({key: build_resource(s, root=under_out(self.out, s.root))
                          for key, s in self.io_managers.items()})
        resources["ai_cache"] = ResultCacheResource(path=under_out(self.out, self.journal) if self.journal else None)
        return dg.Definitions(resources=resources)
