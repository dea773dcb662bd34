"""One signature per idea, as users meet it: every ``AssetArgs`` field (``automation_condition`` first) reaches
every asset a factory makes, the dead letters included, and a keyword no factory takes is refused by name.

Models Dagster's documented Declarative Automation semantics (docs.dagster.io, "Declarative Automation":
``AutomationCondition.eager()`` requests an asset when a dependency updates; ``will_be_requested`` is true for an
asset requested in the same tick), evaluated by ``dg.evaluate_automation_conditions`` as the daemon does.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest

from ai_assets.dagster import embed_asset, prompt_asset, summarize_asset
from ai_assets.dagster.tasks import task_asset


def _requested(assets: list[dg.AssetsDefinition]) -> set[str]:
    upstream = dg.AssetSpec("reviews")
    none = dg.ResourceDefinition.none_resource()  # conditions are evaluated, nothing is run
    defs = dg.Definitions(assets=[upstream, *assets], resources={"llm": none, "ai_cache": none})
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # a first tick only starts the cursor
        instance.report_runless_asset_event(dg.AssetMaterialization("reviews"))
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        return {r.key.to_user_string() for r in result.results if r.true_subset.size > 0}


@pytest.mark.parametrize("dead_letter", [False, True])
def test_an_automation_condition_requests_the_enrichment_and_its_dead_letters_together(dead_letter: bool) -> None:
    """With ``dead_letter=True`` the enrichment and its dead letters are one op's outputs: a tick that requests the
    enrichment alone would write no dead letters, so they are requested with it (and never alone)."""
    insights = prompt_asset("insights", "reviews", template="{text}", dead_letter=dead_letter,
                            automation_condition=dg.AutomationCondition.eager())
    expected = {"insights", "insights_dead_letter"} if dead_letter else {"insights"}
    assert _requested([insights]) == expected


def test_every_factory_keeps_the_asset_args_it_is_given() -> None:
    """``owners``, ``kinds``, ``tags``, ``automation_condition`` on a generated task factory and on ``embed_asset``
    (a typed ``**args: Unpack[EnrichArgs]``: what an IDE offers is what reaches Dagster)."""
    condition = dg.AutomationCondition.on_cron("0 2 * * *")
    made = [summarize_asset("short", "reviews", column="text", owners=["team:ml"], kinds={"summaries"},
                            automation_condition=condition, tags={"tier": "gold"}),
            embed_asset("vectors", "reviews", column="text", owners=["team:ml"], kinds={"summaries"},
                        automation_condition=condition, tags={"tier": "gold"}, dead_letter=True)]
    for assets in made:
        for key, spec in assets.specs_by_key.items():
            assert spec.owners == ["team:ml"], key
            assert {"ai", "summaries"} <= set(spec.kinds), key
            assert spec.tags.get("tier") == "gold", key
            assert spec.automation_condition is not None, key


@pytest.mark.parametrize("make", [
    lambda: prompt_asset("a", "reviews", template="{text}", provider="llm"),  # a plain function's keyword
    lambda: embed_asset("a", "reviews", column="text", max_eror_rate=0.1),  # a typo
    lambda: summarize_asset("a", "reviews", column="text", to="French"),  # another task's setting
    lambda: task_asset("a", "reviews", "summarize", {"column": "text"}, cache="ai_cache"),
])
def test_a_keyword_no_factory_takes_is_refused_by_name(make: Any) -> None:
    """A keyword swallowed by ``**args`` would otherwise vanish (or reach ``@dg.asset`` as an obscure error)."""
    with pytest.raises((TypeError, Exception)) as raised:
        make()
    message = str(raised.value)
    assert any(word in message for word in ("provider", "max_eror_rate", "to", "cache")), message


def test_a_generated_task_factory_reads_like_a_written_one() -> None:
    """``help(summarize_asset)``: its name, its task's settings with their defaults, and a docstring."""
    import inspect

    signature = inspect.signature(summarize_asset)
    assert summarize_asset.__name__ == "summarize_asset"
    assert signature.parameters["max_words"].default == 50
    assert signature.parameters["column"].default is inspect.Parameter.empty
    assert "summar" in (summarize_asset.__doc__ or "").lower()
