"""Every parameter does what it says: one test per setting that was accepted and then not honoured, read at the
fake server (what it received) or in the stored tables."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from pydantic import BaseModel

from ai_assets import (
    OpenAICompatibleProvider,
    ResultCache,
    RetryPolicy,
    RowFailedError,
    RunOptions,
    SentenceTransformersProvider,
    embed_text,
    prompt,
)
from ai_assets.dagster import (
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    ingest_asset,
    prompt_asset,
)
from ai_assets.runtime.vectors import vectors_to_arrow
from ai_assets.storage.base import with_partition
from ai_assets.storage.delta import DeltaStore
from ai_assets.storage.lance import LanceStore
from ai_assets.testing import FakeOpenAIServer, Fault
from tests.kinds import TABLE_STORE_KINDS

pytestmark = pytest.mark.slow


class Answer(BaseModel):
    word: str


def source(tmp_path: Path, texts: Sequence[str]) -> Path:
    path = tmp_path / "src.jsonl"
    path.write_text("".join(f'{{"text": "{t}"}}\n' for t in texts))
    return path


def test_the_asset_s_model_is_the_model_the_requests_use(tmp_path: Path, server: FakeOpenAIServer) -> None:
    path = source(tmp_path, ["a", "b", "c"])
    raw = ingest_asset("raw", path=str(path))
    chosen = prompt_asset("chosen", raw, template="{text}", model="asset-model")
    default = prompt_asset("default", raw, template="{text}")
    cache = ResultCacheResource(path=str(tmp_path / "journal.sqlite"))
    resources = {"llm": OpenAICompatibleResource(model="resource-model", base_url=server.base_url, api_key="k"),
                 "ai_cache": cache, "io_manager": ParquetIOManager(root=str(tmp_path / "out"))}
    assert dg.materialize([raw, chosen, default], resources=resources).success
    assert server.stats().models == {"asset-model": 3, "resource-model": 3}
    server.reset()
    # The model is part of every key: switching it back and forth pays nothing twice, the journal keeps both.
    assert dg.materialize([raw, chosen, default], resources=resources).success
    assert server.stats().chat_requests == 0
    other = prompt(pa.table({"text": ["a"]}), "{text}", model="call-model",
                   provider=OpenAICompatibleProvider("resource-model", base_url=server.base_url, api_key="k"))
    assert other.usage.requests == 1 and server.stats().models == {"call-model": 1}


def test_the_resource_reads_openai_api_key_and_sends_account_headers(
        tmp_path: Path, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    path = source(tmp_path, ["a"])
    raw = ingest_asset("raw", path=str(path))
    answers = prompt_asset("answers", raw, template="{text}", cache_key=None)
    resource = OpenAICompatibleResource(model="m", base_url=server.base_url, organization="org-1", project="proj-1",
                                        headers={"x-team": "search"})
    result = dg.materialize([raw, answers], resources={"llm": resource,
                                                       "io_manager": ParquetIOManager(root=str(tmp_path / "out"))})
    assert result.success
    headers = server.stats().headers
    assert headers["authorization"] == "Bearer sk-from-the-environment"
    assert (headers["openai-organization"], headers["openai-project"]) == ("org-1", "proj-1")
    azure = OpenAICompatibleProvider("m", base_url=server.base_url, api_key="azure-key", auth="api-key")
    prompt(pa.table({"text": ["b"]}), "{text}", provider=azure)
    assert server.stats().headers["api-key"] == "azure-key"


def test_the_base_url_comes_from_openai_base_url_like_the_sdk(server: FakeOpenAIServer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    out = prompt(pa.table({"text": ["routed by the environment"]}), "{text}", provider=OpenAICompatibleProvider("m"))
    assert out.table.column("response").to_pylist() == ["Answer to: routed by the environment"]
    assert server.stats().chat_requests == 1


def test_embedding_requests_are_split_to_the_endpoint_s_limits(server: FakeOpenAIServer) -> None:
    texts = [f"text number {i}" for i in range(3000)]
    llm = OpenAICompatibleProvider("m", base_url=server.base_url, api_key="k")
    embed_text(pa.table({"t": texts}), "t", provider=llm, options=RunOptions(batch_size=3000))
    assert sorted(server.stats().embedding_batches) == [952, 2048]  # at most 2,048 inputs a request
    server.reset()
    small = OpenAICompatibleProvider("m", base_url=server.base_url, api_key="k", max_request_tokens=20)
    out = embed_text(pa.table({"t": texts[:50]}), "t", provider=small, options=RunOptions(batch_size=64))
    assert max(server.stats().embedding_batches) == 5  # about 4 tokens a text, at most 20 tokens a request
    assert out.table.column("embedding").null_count == 0


class Flaky:
    """A local embedder (any class with identity() and embed_text()) whose model fails on some inputs."""

    def __init__(self, inner: SentenceTransformersProvider) -> None:
        self.inner = inner
        self.calls = 0

    def identity(self) -> dict[str, str]:
        return {"provider": "flaky-wrapper", "model": "minilm"}

    def load(self) -> None:
        self.inner.load()

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if any("poison" in t for t in texts):
            raise RuntimeError("the model choked on this input")
        if any("slow" in t for t in texts):
            time.sleep(2)
        return self.inner.embed_text(texts)


def test_local_embedders_honour_on_error_timeout_and_the_journal(tmp_path: Path) -> None:
    flaky = Flaky(SentenceTransformersProvider(device="cpu"))
    table = pa.table({"t": ["fine one", "poison pill", "fine two", "slow one"]})
    options = RunOptions(on_error="null", timeout_s=0.5, retry=RetryPolicy(max_attempts=2, base_wait=0.01))
    cache = ResultCache(tmp_path / "journal.sqlite")
    out = embed_text(table, "t", provider=flaky, options=options, cache=cache)
    errors = out.table.column("embedding_error").to_pylist()
    vectors = out.table.column("embedding").to_pylist()
    assert vectors[0] is not None and vectors[2] is not None  # the batch's good rows keep their answers
    assert "RuntimeError: the model choked" in errors[1] and vectors[1] is None
    assert "no answer within 0.5s" in errors[3] and vectors[3] is None
    with pytest.raises(RowFailedError, match="row 1 failed"):
        embed_text(table.slice(0, 2), "t", provider=flaky, options=RunOptions(on_error="raise"),
                   cache=ResultCache(tmp_path / "other.sqlite"))
    again = embed_text(table.slice(0, 3), "t", provider=flaky, options=options, cache=cache)
    assert again.usage.cache_hits == 2 and again.usage.sent_rows == 1  # only the failed row is tried again


def test_row_failed_error_carries_the_tokens_of_every_attempt(server: FakeOpenAIServer,
                                                               llm: OpenAICompatibleProvider) -> None:
    server.set_faults(Fault("schema_violation", attempts=None))
    with pytest.raises(RowFailedError) as caught:
        prompt(pa.table({"text": ["never valid"]}), "{text}", provider=llm, return_format=Answer,
               options=RunOptions(retry=RetryPolicy(max_attempts=3)))
    billed = server.stats()
    assert caught.value.attempts == 3
    assert (caught.value.usage.prompt_tokens, caught.value.usage.completion_tokens) == \
        (billed.prompt_tokens, billed.completion_tokens)
    assert caught.value.usage.prompt_tokens > 0


def test_a_step_retry_never_resends_a_row_that_used_up_its_attempts(tmp_path: Path,
                                                                    server: FakeOpenAIServer) -> None:
    """The rule: a row gets max_attempts requests per run. A retry of the same run (Dagster's RetryPolicy) reads the
    failure from the journal instead of sending again; a new run sends it again."""
    server.set_faults(Fault("500", match="poison", attempts=None))
    path = source(tmp_path, ["fine", "poison"])
    raw = ingest_asset("raw", path=str(path))
    answers = prompt_asset("answers", raw, template="{text}", retry_policy=dg.RetryPolicy(max_retries=2),
                           options=RunOptions(on_error="raise", retry=RetryPolicy(max_attempts=3, base_wait=0.01)))
    resources = {"llm": OpenAICompatibleResource(model="m", base_url=server.base_url, api_key="k"),
                 "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite")),
                 "io_manager": ParquetIOManager(root=str(tmp_path / "out"))}
    result = dg.materialize([raw, answers], resources=resources, raise_on_error=False)
    assert not result.success
    step_attempts = [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
    assert len(step_attempts) == 2  # Dagster retried the step twice
    assert server.stats().by_key["poison"] == 3  # ...and the row still cost max_attempts, not 9
    assert server.stats().by_key["fine"] == 1
    dg.materialize([raw, answers], resources=resources, raise_on_error=False)
    assert server.stats().by_key["poison"] == 6  # a new run tries it again, alone


def test_delta_merge_can_delete_rows_that_left_the_partition(tmp_path: Path) -> None:
    def rows(ids: list[int], partition: str) -> pa.Table:
        return with_partition(pa.table({"id": ids, "v": [f"{partition}-{i}" for i in ids]}), partition)

    for delete_missing, expected in ((False, [1, 2, 3]), (True, [1, 2])):
        root = str(tmp_path / f"delete-{delete_missing}")
        store = DeltaStore(root, merge_on=["id"], delete_missing=delete_missing)
        store.write(rows([1, 2, 3], "p"), ["p"])
        store.write(rows([7], "q"), ["q"])
        store.write(rows([1, 2], "p"), ["p"])
        assert sorted(store.read(["p"]).column("id").to_pylist()) == expected
        assert store.read(["q"]).column("id").to_pylist() == [7]  # another partition is never touched


def test_lancedb_folds_new_partitions_into_the_vector_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def vectors(n: int, partition: str) -> pa.Table:
        return with_partition(pa.table({"v": vectors_to_arrow(list(rng.normal(size=(n, 16)).astype(np.float32)),
                                                              16)}), partition)

    store = LanceStore(str(tmp_path), "vectors", vector_column="v", index_after_rows=300, reindex_after_rows=100)
    store.write(vectors(300, "a"), ["a"])
    assert store.unindexed_rows() == 0
    store.write(vectors(50, "b"), ["b"])
    assert store.unindexed_rows() == 50  # below reindex_after_rows: left for later
    store.write(vectors(120, "c"), ["c"])
    assert store.unindexed_rows() == 0
    table = store._open()
    plan = table.search(rng.normal(size=16).astype(np.float32)).explain_plan(True)
    assert "ANNSubIndex" in plan and "LanceScan" not in plan  # the query uses the index alone, no flat scan


def test_a_concurrent_writer_sees_no_torn_journal_while_a_run_streams(tmp_path: Path, server: FakeOpenAIServer,
                                                                       llm: OpenAICompatibleProvider) -> None:
    """Readers of the SQLite journal during a run see whole entries only (each write is one transaction)."""
    cache = ResultCache(tmp_path / "journal.sqlite")
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        reader = ResultCache(tmp_path / "journal.sqlite")
        while not stop.is_set():
            seen.append(len(reader))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    server.set_latency(0.01)
    try:
        prompt(pa.table({"text": [f"row {i}" for i in range(300)]}), "{text}", provider=llm, cache=cache,
               options=RunOptions(concurrency=16))
    finally:
        stop.set()
        watcher.join()
    assert seen == sorted(seen) and len(cache) == 301  # 300 answers and the calibration entry


@pytest.mark.parametrize("kind", TABLE_STORE_KINDS)
def test_ingest_from_a_table_honours_columns_limit_and_min_rows(tmp_path: Path, kind: str) -> None:
    """``columns``, ``limit`` and ``min_rows`` of ``ingest_asset`` apply to a table source as to files (they were
    ignored: 10 rows, every column, success), in the factory and the YAML component alike."""
    from ai_assets.dagster.components import IngestComponent
    from ai_assets.functions.table_sources import DeltaSource, LanceSource

    table = pa.table({"id": list(range(10)), "day": ["d1"] * 10, "text": [f"t{i}" for i in range(10)]})
    if kind == "delta":
        DeltaStore(str(tmp_path / "sales")).write(table, None)
        table_source: DeltaSource | LanceSource = DeltaSource(str(tmp_path / "sales"), partition_column="day")
        yaml_source = {"delta_table": str(tmp_path / "sales")}
    else:
        LanceStore(str(tmp_path / "db"), "sales").write(table, None)
        table_source = LanceSource(str(tmp_path / "db"), "sales", partition_column="day")
        yaml_source = {"lance_table": f"{tmp_path / 'db'}/sales"}
    days = dg.StaticPartitionsDefinition(["d1"])
    resources = {"io_manager": ParquetIOManager(root=str(tmp_path / "out"))}
    component = IngestComponent(name="from_yaml", partition_column="day", columns=["id"], limit=2,
                                partitions=None, **yaml_source)  # type: ignore[arg-type]
    built = [ingest_asset("from_factory", source=table_source, columns=["id"], limit=2, partitions_def=days),
             ingest_asset("from_yaml", spec=component.spec(), partitions_def=days)]
    for asset in built:
        assert dg.materialize([asset], partition_key="d1", resources=resources).success
        stored = ParquetIOManager(root=str(tmp_path / "out")).store(asset.key, {}).read(["d1"])
        assert stored.num_rows == 2
        assert [n for n in stored.column_names if not n.startswith("_")] == ["id"]
    too_few = ingest_asset("too_few", source=table_source, min_rows=100, partitions_def=days)
    with pytest.raises(Exception, match=r"10 row\(s\), fewer than min_rows=100"):
        dg.materialize([too_few], partition_key="d1", resources=resources)
    for setting in ({"format": "csv"}, {"bad_rows": "null"}, {"storage_options": {"anon": "true"}}):
        with pytest.raises(dg.DagsterInvalidDefinitionError, match=f"{next(iter(setting))}=.* applies to files"):
            ingest_asset("refused", source=table_source, **setting)  # type: ignore[arg-type]


def test_sampling_params_reach_every_llm_request_of_every_factory_and_component(
        tmp_path: Path, server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    """``params`` of classify (method llm) and of every task factory and component reach the wire (classify_text
    hard-coded temperature 0; the task factories took no params); without them the defaults stay."""
    from ai_assets import PromptParams, classify_text
    from ai_assets.dagster import (
        classify_asset,
        extract_asset,
        fix_grammar_asset,
        mask_asset,
        sentiment_asset,
        summarize_asset,
        translate_asset,
    )
    from ai_assets.dagster.components import ClassifyComponent, Params, TaskComponent

    sent = '{"max_tokens": 33, "temperature": 0.7}'
    params = PromptParams(temperature=0.7, max_output_tokens=33)
    table = pa.table({"text": ["a", "b"]})
    classify_text(table, "text", ["x", "y"], provider=llm, method="llm", params=params)
    assert server.stats().sampling == {sent: 2}
    server.reset()
    classify_text(table, "text", ["x", "y"], provider=llm, method="llm")
    assert server.stats().sampling == {'{"temperature": 0.0}': 2}

    path = source(tmp_path, ["a", "b"])
    raw = ingest_asset("raw", path=str(path))
    factories = [
        classify_asset("c", raw, column="text", labels=["x", "y"], method="llm", provider_key="llm", params=params),
        extract_asset("e", raw, column="text", fields=["word"], params=params),
        summarize_asset("s", raw, column="text", params=params),
        translate_asset("t", raw, column="text", to="French", params=params),
        sentiment_asset("m", raw, column="text", params=params),
        mask_asset("k", raw, column="text", params=params),
        fix_grammar_asset("g", raw, column="text", params=params),
    ]
    yaml = Params(temperature=0.7, max_output_tokens=33)
    components = [
        ClassifyComponent(name="yc", upstream="raw", column="text", labels=["p", "q"], method="llm",
                          provider_key="llm", params=yaml).asset(),
        TaskComponent(name="ys", upstream="raw", task="translate", to="German", column="text", params=yaml).asset(),
    ]
    resources = {"llm": OpenAICompatibleResource(model="m", base_url=server.base_url, api_key="k"),
                 "io_manager": ParquetIOManager(root=str(tmp_path / "out")),
                 "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite"))}
    server.reset()  # (each asset asks something new: the journal would answer a repeated request)
    assert dg.materialize([raw, *factories, *components], resources=resources).success
    assert server.stats().sampling == {sent: 2 * (len(factories) + len(components))}


def test_the_task_component_builds_every_task_and_refuses_what_a_task_does_not_take(
        tmp_path: Path, server: FakeOpenAIServer) -> None:
    """similarity comes from YAML too (two columns, an embedder); a setting of another task or a missing one is a
    ConfigError naming it (``to`` on summarize used to be ignored)."""
    from ai_assets.dagster.components import TaskComponent
    from ai_assets.runtime.errors import ConfigError

    raw = ingest_asset("raw", path=str(source(tmp_path, ["a", "b"])))
    similar = TaskComponent(name="same", upstream="raw", task="similarity", left="text", right="text",
                            embedding_model="e-1").asset()
    resources = {"embedder": OpenAICompatibleResource(model="m", base_url=server.base_url, api_key="k"),
                 "io_manager": ParquetIOManager(root=str(tmp_path / "out")),
                 "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite"))}
    assert dg.materialize([raw, similar], resources=resources).success
    scores = ParquetIOManager(root=str(tmp_path / "out")).store(dg.AssetKey("same"), {}).read().column("same")
    assert scores.to_pylist() == pytest.approx([1.0, 1.0])
    assert server.stats().embedding_inputs == 2  # each distinct text once, for both columns

    for settings, named in (({"task": "summarize", "column": "text", "to": "French"}, "['to']"),
                            ({"task": "translate", "column": "text"}, "needs ['to']"),
                            ({"task": "similarity", "left": "a", "right": "b", "llm_model": "m"}, "['llm_model']"),
                            ({"task": "similarity", "left": "a"}, "needs ['right']")):
        with pytest.raises(ConfigError, match=re.escape(named)):
            TaskComponent(name="t", upstream="raw", **settings).asset()


def test_batch_size_is_a_local_model_s_forward_pass(tmp_path: Path) -> None:
    """``RunOptions.batch_size`` sets the texts per forward pass of a local embedder (it was ignored: the
    provider's own size always); unset, the provider's own size stays (16 on a CPU)."""
    provider = SentenceTransformersProvider(device="cpu")
    sizes: list[int] = []
    hook = provider.model[0].register_forward_pre_hook(  # the model's first module: one call per forward pass
        lambda _module, args: sizes.append(len(args[0]["input_ids"])))
    try:
        table = pa.table({"t": [f"text number {i}" for i in range(20)]})
        embed_text(table, "t", provider=provider, options=RunOptions(batch_size=7))
        assert sizes == [7, 7, 6]
        sizes.clear()
        embed_text(table, "t", provider=provider)
        assert sizes == [16, 4]
        assert provider.batch_size == 16  # the caller's provider is not changed (its CPU default)
    finally:
        hook.remove()


def test_every_run_option_is_taken_from_yaml() -> None:
    """The component's ``options`` are RunOptions' own fields (window_rows, window_bytes, batch, rate_headroom
    were missing, and 11 defaults were copied by hand): each field given in YAML reaches RunOptions, and a field
    not given keeps RunOptions' default."""
    import dataclasses

    from ai_assets.dagster.components import Options
    from ai_assets.dagster.derived import build

    assert build(Options()) == RunOptions()
    changed = {"concurrency": 3, "rpm": 60.0, "tpm": 6000.0, "rate_headroom": 0.1, "timeout_s": 9.0,
               "retry": {"max_attempts": 2, "base_wait": 0.1, "max_wait": 5.0}, "on_error": "null", "batch_size": 8,
               "retry_failed_rows": False, "window_rows": 100, "window_bytes": 4096, "max_cost": 1.5,
               "max_tokens": 1000, "mode": "batch", "batch": {"max_requests": 10, "max_bytes": 2048, "poll_s": 1.0,
                                                              "max_wait_s": 60.0, "on_expired": "error"},
               "order_by_prefix": False}
    assert set(changed) == {f.name for f in dataclasses.fields(RunOptions)}  # a new field must be added here
    built = build(Options.model_validate(changed))
    for name, value in changed.items():
        got = getattr(built, name)
        assert (dataclasses.asdict(got) if dataclasses.is_dataclass(got) else got) == value, name
    assert build(Options.model_validate({"max_attempts": 7})).retry.max_attempts == 7


def test_yaml_resources_take_exactly_their_resource_s_fields(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A YAML provider or store takes its resource's own fields, all of them, and refuses the others (base_url,
    rpm, tpm and the model were dropped for non-openai kinds, index_after_rows for parquet and delta)."""
    import pydantic

    from ai_assets.dagster import LlamaCppResource, SentenceTransformersResource
    from ai_assets.dagster.components import ResourcesComponent
    from ai_assets.dagster.registry import build_resource

    monkeypatch.setenv("MY_KEY", "sk-from-the-environment")
    component = ResourcesComponent.model_validate({"out": str(tmp_path), "providers": {
        "llm": {"kind": "openai", "llm_model": "m", "base_url": "http://127.0.0.1:9/v1", "rpm": 60, "tpm": 6000,
                "api_key_env": "MY_KEY", "embedding_dimensions": 64, "max_response_bytes": 4096},
        "local": {"kind": "llama_cpp", "llm_model": "/models/x.gguf", "context": 512},
        "embedder": {"kind": "sentence_transformers", "embedding_model": "mini", "batch_size": 8, "device": "cpu"},
    }, "io_managers": {"lance": {"kind": "lancedb", "root": "l", "index_after_rows": 5, "reindex_after_rows": 7}}})
    llm = build_resource(component.providers["llm"])
    assert (llm.model, llm.base_url, llm.rpm, llm.tpm, llm.embedding_dimensions, llm.max_response_bytes) == (
        "m", "http://127.0.0.1:9/v1", 60, 6000, 64, 4096)
    assert isinstance(llm.api_key, dg.EnvVar) and llm.api_key.env_var_name == "MY_KEY"  # never the value
    local = build_resource(component.providers["local"])
    assert isinstance(local, LlamaCppResource) and (local.model_path, local.context) == ("/models/x.gguf", 512)
    embedder = build_resource(component.providers["embedder"])
    assert isinstance(embedder, SentenceTransformersResource)
    assert (embedder.model, embedder.batch_size, embedder.device) == ("mini", 8, "cpu")
    lance = build_resource(component.io_managers["lance"], root=str(tmp_path / "l"))
    assert (lance.index_after_rows, lance.reindex_after_rows) == (5, 7)
    for wrong in ({"providers": {"x": {"kind": "llama_cpp", "rpm": 5}}},
                  {"providers": {"x": {"kind": "sentence_transformers", "base_url": "http://h/v1"}}},
                  {"providers": {"x": {"kind": "efficientnet", "llm_model": "m"}}},
                  {"io_managers": {"x": {"kind": "parquet", "root": "p", "index_after_rows": 3}}},
                  {"io_managers": {"x": {"kind": "delta", "root": "d", "index_after_rows": 3}}}):
        with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
            ResourcesComponent.model_validate(wrong)


def test_a_label_prompt_is_a_prompt_whatever_it_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ClassifyImage label given as a string is a prompt even with '/' or '*' in it (it was taken as a file
    glob, and failed); example images are a list of files or ``{glob:, files:}``."""
    from PIL import Image

    from ai_assets.dagster.components import ClassifyImageComponent

    (tmp_path / "examples").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), "red").save(tmp_path / "examples" / name)
    monkeypatch.chdir(tmp_path)
    asset = ClassifyImageComponent(name="kinds", upstream="images", labels={
        "phone": "a 3/4 view of a *phone*", "red": {"glob": "examples/*.png"},
        "listed": [str(tmp_path / "examples" / "a.png")]}).asset()
    assert asset.key == dg.AssetKey("kinds")
    with pytest.raises(Exception, match=r"no example image for label 'none'"):
        ClassifyImageComponent(name="k", upstream="images", labels={"none": {"glob": "nothing/*.png"}}).asset()


def test_a_model_changed_on_the_resource_makes_the_asset_stale(tmp_path: Path, server: FakeOpenAIServer) -> None:
    """Only the asset's own ``model=`` entered its code version, so a new model on the resource left the asset
    fresh. With ``provider_versions`` the resource's answer settings count too (a rate or a key do not)."""
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    from ai_assets.dagster import provider_versions

    path = source(tmp_path, ["a", "b"])
    raw = ingest_asset("raw", path=str(path))
    answers = prompt_asset("answers", raw, template="{text}")

    def defs(model: str, rpm: float | None = None) -> dg.Definitions:
        return provider_versions(dg.Definitions(assets=[raw, answers], resources={
            "llm": OpenAICompatibleResource(model=model, base_url=server.base_url, api_key="k", rpm=rpm),
            "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite")),
            "io_manager": ParquetIOManager(root=str(tmp_path / "out"))}))

    def version(d: dg.Definitions) -> str | None:
        return d.resolve_asset_graph().get(dg.AssetKey("answers")).code_version

    assert version(defs("m1")) != version(defs("m2"))
    assert version(defs("m1")) == version(defs("m1", rpm=100))  # pacing decides no answer
    instance = dg.DagsterInstance.ephemeral()
    first = defs("m1")
    assert dg.materialize(list(first.assets or []), instance=instance, resources=first.resources).success

    def status(d: dg.Definitions) -> StaleStatus:
        resolver = get_stale_status_resolver(instance, list(d.assets or []))  # Dagster's own test helper
        return resolver.get_status(dg.AssetKey("answers"))

    assert status(defs("m1")) == StaleStatus.FRESH
    assert status(defs("m2")) == StaleStatus.STALE


def test_a_null_vector_survives_a_delta_round_trip(tmp_path: Path) -> None:
    """An image that failed to embed has a null vector; delta-rs 1.6 wrote it as an empty list under a fixed-size
    Arrow schema, and every read of the table failed ("expected all lists to be of size=4"); the demo's
    product_image_classes table was unreadable."""
    table = pa.table({"id": [1, 2, 3], "v": vectors_to_arrow([np.ones(4), None, np.ones(4)], 4)})
    whole = DeltaStore(str(tmp_path / "whole"))
    whole.write(table, None)
    parts = DeltaStore(str(tmp_path / "parts"))
    parts.write(with_partition(table, "p"), ["p"])
    for read in (whole.read(), parts.read(["p"])):
        assert read.schema.field("v").type == pa.list_(pa.field("item", pa.float32()), 4)
        assert read.column("v").to_pylist() == [[1.0] * 4, None, [1.0] * 4]
