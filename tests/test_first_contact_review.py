"""A hostile review of the first-contact fixes (secrets, documents, chunks, ``defaults.yaml``): inputs and servers
their authors did not design for, each against the real parts.

Modelled behaviour (documented, real-world), per test below:

* a key travels encoded as often as plain: percent-encoded in a query string or form body (RFC 3986 section 2.1;
  Google's API keys go in ``?key=``), JSON-escaped with ``\\/`` for ``/`` (RFC 8259 section 7 allows it; PHP's
  ``json_encode`` writes it by default), base64 inside an echoed ``Authorization: Basic`` header (RFC 7617:
  ``base64(user-id ":" password)``), and a gateway's 4xx body may echo the request whole (RFC 9110 section
  15.5.1: any representation the server chooses, megabytes of it);
* a JSON Lines file's field may hold any JSON value (jsonlines.org: "each line is a valid JSON value"), so a text
  column read from one can arrive as integers;
* Helm, whose values merge ``defaults.yaml`` follows, warns when one file has a mapping and the other a single value
  for the same key ("cannot overwrite table with non table", helm/pkg/chartutil/coalesce.go) rather than pick one
  in silence.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import string
import time
import urllib.parse
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from ai_assets import ConfigError, OpenAICompatibleProvider, RetryPolicy, RunOptions, chunk_text, extract_text, prompt
from ai_assets.dagster.components import EmbedComponent
from ai_assets.functions import pdf_workers
from ai_assets.functions.cascade import Cascade
from ai_assets.functions.url_guard import redirect_target
from ai_assets.runtime import scrub
from ai_assets.runtime.errors import PermanentError, bounded
from ai_assets.testing import FakeOpenAIServer
from ai_assets.testing.documents import pdf_pages
from tests.hostile import Answer, hostile_server

B64_KEY_CHARS = string.ascii_letters + string.digits + "+/="  # Azure's and many gateways' keys are base64 text
b64_keys = st.text(B64_KEY_CHARS, min_size=24, max_size=88)
fillers = st.text(string.ascii_letters + " :;,{}\"'", max_size=200)


def six_pieces(text: str) -> set[str]:
    return {text[i:i + 6] for i in range(len(text) - 5)}


@settings(max_examples=150, deadline=None)
@given(key=b64_keys, before=fillers, after=fillers, user=st.text(string.ascii_lowercase, max_size=5))
def test_a_key_echoed_percent_encoded_json_escaped_or_as_basic_auth_is_masked(key: str, before: str, after: str,
                                                                              user: str) -> None:
    """Before: only the plain key was masked, so ``quote(key)`` kept every run of under 6 characters between two
    escapes (a key with a ``/`` every few characters leaked whole), and base64 of ``user:key`` leaked entirely."""
    encoded = urllib.parse.quote(key, safe="")
    out = bounded(f"{before} GET /v1/models?key={encoded} {after}", [key], 4000)
    assert not six_pieces(key) & six_pieces(urllib.parse.unquote(out)), out
    escaped = json.dumps({"key": key}).replace("/", "\\/")
    out = bounded(f"{before} {escaped} {after}", [key], 4000)
    assert not six_pieces(key) & six_pieces(out.replace("\\/", "/")), out
    basic = base64.b64encode(f"{user}:{key}".encode()).decode()
    out = bounded(f"{before} Authorization: Basic {basic} {after}", [key], 4000)
    inner = basic[4:-4]  # the characters holding only the key's bits, whatever the user name's length
    assert not six_pieces(inner) & six_pieces(out), out


def test_a_megabyte_error_body_is_scrubbed_in_milliseconds_with_64_keys_remembered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: with 64 keys remembered, 1 MB of text holding none of them took 15.5 s (a regular expression of
    every 4-character piece of every key searched the whole megabyte), per failed row. Now the search stops at the
    cut, and each place costs one set lookup whatever the number of keys."""
    monkeypatch.setattr(scrub, "_remembered", {})
    rng = random.Random(3)
    scrub.remember_secrets("sk-" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(60))
                           for _ in range(64))
    bounded("warm up", [], 300)  # builds the pieces once (cached per set of keys)
    for body in ("z" * (1 << 20), "<html>" + "<p>gateway error</p>" * 50_000):
        started = time.perf_counter()
        out = bounded(body, [], 300)
        assert time.perf_counter() - started < 0.5
        assert len(out) == 300 and out.endswith("…")


@pytest.mark.parametrize(("values", "kind"), [([1, 2], "int64"), ([b"x"], "binary"), ([[1.0]], "list<item: double>")])
def test_chunk_text_over_a_column_that_is_not_text_names_it(values: list[object], kind: str) -> None:
    """Before: ``TypeError: object of type 'int' has no len()`` from deep inside, naming nothing."""
    with pytest.raises(ConfigError, match=f"chunk_text: column 'text' holds {kind}, not text"):
        chunk_text(pa.table({"text": values}), "text", size=10, overlap=0)
    with pytest.raises(ConfigError, match="no column 'body'"):
        chunk_text(pa.table({"text": ["a"]}), "body")


@pytest.mark.parametrize(("size", "overlap"), [("10", 0), (10, "2"), (2.5, 0), (True, 0)])
def test_chunk_text_sizes_of_the_wrong_type_are_a_config_error(size: object, overlap: object) -> None:
    """A size read from YAML as a string (``size: "10"``) raised ``TypeError: '<' not supported``."""
    with pytest.raises(ConfigError, match="chunk_text: need size >= 1"):
        chunk_text(pa.table({"text": ["abc def"]}), "text", size=size, overlap=overlap)  # type: ignore[arg-type]


@pytest.mark.parametrize(("yaml_text", "own", "named"), [
    ("options: 3", {}, "options: int 3 here, but a mapping in the component's own YAML"),
    ("options: [{concurrency: 1}]", {}, "options: list [{'concurrency': 1}] here, but a mapping"),
    ("options: {retry: 7, max_attempts: 4}", {}, "options.retry: Input should be a valid dictionary"),
    ("group_name: {name: shared}", {"group_name": "mine"}, "group_name: a mapping here, but str 'mine'"),
])
def test_a_defaults_yaml_value_of_the_wrong_shape_is_named_even_under_a_component_s_own(
        tmp_path: Path, yaml_text: str, own: dict[str, object], named: str) -> None:
    """Before: a component with ``options`` (or a ``group_name``) of its own dropped the folder's ``options: 3``
    (a list, a mapping) in silence, and a folder's ``retry: 7`` beside ``max_attempts`` vanished (the shortcut
    overwrote it), so the same bad file passed or failed by which component read it."""
    (tmp_path / "defaults.yaml").write_text(yaml_text + "\n")
    component = EmbedComponent(name="vectors", upstream="raw", column="text", options={"concurrency": 2},  # type: ignore[arg-type]
                               **own)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as caught:
        component.with_folder_defaults(tmp_path)
    assert f"{tmp_path / 'defaults.yaml'}: {named}" in str(caught.value)


def test_a_null_in_either_file_is_no_clash(tmp_path: Path) -> None:
    """Helm's documented way to delete a default is a null; it stays one (no clash, the default is dropped)."""
    (tmp_path / "defaults.yaml").write_text("options: {retry: {max_attempts: 3}, on_error: 'null'}\n")
    component = EmbedComponent(name="vectors", upstream="raw", column="text", options={"retry": None})  # type: ignore[arg-type]
    merged = component.with_folder_defaults(tmp_path)
    assert merged.model_dump(exclude_unset=True)["options"] == {"retry": None, "on_error": "null"}


def test_idle_readers_killed_from_outside_are_reaped_and_replaced() -> None:
    """Idle PDF readers killed by the kernel's OOM killer (their ``oom_score_adj`` is 1000, so they go first):
    the next file gets a live reader, and every dead one's pipes and log are closed then, not left to the
    collector (before: a dead idle reader was dropped unclosed, and one deeper in the pool stayed there)."""
    table = pa.table({"path": ["a.pdf", "b.pdf"], "bytes": [pdf_pages([["hello"]])] * 2})
    with pdf_workers._lease(1536), pdf_workers._lease(1536), pdf_workers._lease(1536):
        pass  # three readers at once (three concurrent calls), then three idle
    idle = list(pdf_workers._POOL.idle[1536])
    assert len(idle) == 3
    for child in idle:
        os.kill(child.process.pid, signal.SIGKILL)
        child.process.wait()
    assert extract_text(table, "bytes", max_memory_mb=1536).column("text").to_pylist() == ["hello"] * 2
    assert all(child.log.closed and child.process.stdout is not None and child.process.stdout.closed
               for child in idle)
    assert all(child.process.poll() is None for child in pdf_workers._POOL.idle[1536])


@pytest.mark.parametrize("location", ["https://[v1.x]/", "https://[v7.169.254.169.254]/", "//[vF.metadata]/x",
                                      "https://[fe80::1%25]/"])
def test_a_redirect_to_an_ip_literal_that_is_no_ipv6_address_is_refused(location: str) -> None:
    """RFC 3986 section 3.2.2: inside brackets is an IPv6 address or IPvFuture (``v1.x``), never a host name;
    RFC 6874: a zone follows ``%25`` and is not empty. yarl read ``[v1.x]`` as the host name ``v1.x`` and the
    redirect was followed to whatever that name resolves to; now it is the row's error."""
    with pytest.raises(PermanentError, match="is no IPv6 address"):
        redirect_target(URL("https://example.com/a"), location)
    assert redirect_target(URL("https://example.com/a"), "https://[2001:db8::1]/").raw_host == "2001:db8::1"
    assert redirect_target(URL("https://example.com/a"), "https://[fe80::1%25eth0]/").raw_host == "fe80::1%25eth0"


@pytest.mark.parametrize("models", ["gpt4", "ab", b"xy"])
def test_a_cascade_of_one_string_is_refused_not_read_as_its_letters(models: object) -> None:
    """``Cascade(models="gpt4")`` made a cascade of the models "g", "p", "t" and "4" (a str is a Sequence)."""
    with pytest.raises(ConfigError, match="not one string"):
        Cascade(models=models)  # type: ignore[arg-type]


def test_a_bytes_column_in_a_text_template_is_refused_before_anything_is_paid(server: FakeOpenAIServer) -> None:
    """Before: ``"Describe {image}"`` over image bytes sent ``b'\\x89PNG\\r\\n...'`` (Python's repr of the bytes) as
    the prompt: 3,761 prompt tokens of escapes for a 3 kB PNG, paid and meaningless. Chat APIs take images and files
    as content parts (OpenAI's "Images and vision" and "File inputs" guides), which is what ImageColumn and
    FileColumn send; the column is named before any request."""
    table = pa.table({"image": [b"\x89PNG\r\n\x1a\n" + bytes(3000)], "caption": ["a cat"]})
    llm = OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key="k")
    with pytest.raises(ConfigError, match=r"column\(s\) \['image'\] hold bytes.*ImageColumn"):
        prompt(table, "Describe {image} ({caption})", provider=llm)
    assert server.stats().requests == 0
    assert prompt(table, "Caption: {caption}", provider=llm).table.column("response").to_pylist() == [
        "Answer to: Caption: a cat"]


def test_a_toy_key_is_masked_where_it_stands_alone_not_inside_every_word() -> None:
    """Before: ``api_key="k"`` (the placeholder local servers such as vLLM and llama.cpp accept when started
    without ``--api-key``) masked every letter k of every error a row got back: a vLLM 400 (its documented
    ``{"object": "error", "message": ...}`` body) read ``"This model's maximum context length is 4096 to***ens"``.
    A key under 6 characters is still masked wherever it stands alone."""
    with hostile_server() as hostile:
        body = json.dumps({"object": "error", "message": "This model's maximum context length is 4096 tokens. "
                           "However, you requested 5000 tokens; the key k is fine", "type": "BadRequestError"})
        hostile.reset(LONG=Answer(body.encode(), status=400, headers={"content-type": "application/json"}))
        llm = OpenAICompatibleProvider("m", base_url=hostile.base_url, api_key="k")
        out = prompt(pa.table({"text": ["LONG"]}), "{text}", provider=llm,
                     options=RunOptions(on_error="null", retry=RetryPolicy(max_attempts=1)))
    error = out.table.column("response_error").to_pylist()[0]
    assert "4096 tokens" in error and "the key *** is fine" in error, error
    assert bounded("api-key k (k)", ["k"]) == "api-key *** (***)"


@pytest.mark.parametrize(("setting", "value"), [("max_pages", 2.5), ("max_pages", "3"), ("max_pages", float("inf")),
                                                ("max_chars", 1e3), ("page_timeout_s", float("inf"))])
def test_extract_text_counts_of_the_wrong_type_are_named_before_any_file_is_read(setting: str, value: object) -> None:
    """Before: ``max_pages=2.5`` passed the ``> 0`` check and failed every file of more than 2 pages in the reader
    (``range(2.5)``), ``"3"`` (a count read from YAML as text) raised ``TypeError`` naming nothing, and an infinite
    page timeout never fired. ISO 32000 counts pages in whole numbers; a limit must be a finite number."""
    table = pa.table({"path": ["three.pdf"], "bytes": [pdf_pages([["a"], ["b"], ["c"]])]})
    with pytest.raises(ConfigError, match=f"extract_text: {setting} must be a (whole|finite) number > 0"):
        extract_text(table, "bytes", **{setting: value})  # type: ignore[arg-type]
