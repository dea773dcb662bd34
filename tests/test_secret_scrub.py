"""No part of an API key survives in error text, whatever a provider echoes and wherever a cut falls.

Modelled behaviour (documented, real-world):

* OpenAI's 401 body echoes the key masked: ``Incorrect API key provided: sk-proj-ab**********wxyz. You can find
  your API key at https://platform.openai.com/account/api-keys.`` (OpenAI API reference, "Error codes", 401
  "Invalid Authentication"), so its head and tail are in the provider's own text;
* a gateway or proxy in front of a model server may answer a plain-text or HTML body that prints the request,
  ``Authorization`` header included (RFC 9110 section 15.5.1: a 400 body is any representation the server
  chooses, of any media type);
* pydantic shows a long input cut in the middle, ``'abc...xyz'`` (pydantic-core's ``input_value`` display), so a
  cut made by someone else leaves a key's head before the dots and its tail after them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ai_assets import OpenAICompatibleProvider, RetryPolicy, RunOptions, prompt
from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource, prompt_asset
from ai_assets.runtime import scrub
from ai_assets.runtime.dead_letter import ERROR as DEAD_ERROR
from ai_assets.runtime.errors import MAX_ERROR_CHARS, AIAssetsError, RowFailedError, bounded
from ai_assets.testing import FakeOpenAIServer
from tests.hostile import Answer, HostileServer, hostile_server

KEY_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
FILLER_CHARS = "abcdefghijklmnopqrstuvwxyz ,:;'\"{}[]()<>/=!?-_\n\t.*…éß€"
KEY = "sk-proj-" + "Q7W2E9R4T6Y1U8I3O5P0A2S4D6F8G1H3J5K7L9Z2X4C6V8B0N1M3"
keys = st.text(KEY_CHARS, min_size=32, max_size=164).map(lambda k: "sk-" + k)
fillers = st.text(FILLER_CHARS, max_size=700)


def pieces_of(key: str, size: int) -> set[str]:
    return {key[i:i + size] for i in range(len(key) - size + 1)}


def assert_no_piece(key: str, text: str, size: int = 6) -> None:
    leaked = [piece for piece in pieces_of(key, size) if piece in text]
    assert not leaked, f"pieces of the key survive: {leaked[:3]} in {text!r}"


@settings(max_examples=400, deadline=None)
@given(key=keys, before=fillers, after=fillers, limit=st.integers(20, 400), data=st.data())
def test_bounded_masks_every_piece_of_a_key_at_every_offset_and_cut(key: str, before: str, after: str, limit: int,
                                                                    data: st.DataObject) -> None:
    """The key at any offset of any body, the body cut upstream anywhere (with or without a marker), then cut
    again here: no 6 characters of the key remain, and no 4 next to a cut or a mask."""
    body = before + key + after
    upstream = data.draw(st.integers(0, len(body)))
    marker = data.draw(st.sampled_from(["", "…", "...", "*"]))
    for text in (body, body[:upstream] + marker, marker + body[upstream:], f"HTTP 400: {body[:upstream]}{marker}"):
        out = bounded(text, [key], limit)
        assert len(out) <= limit
        assert_no_piece(key, out)
        for piece in pieces_of(key, 4):  # next to a cut, a marker or a mask, even 4 characters are masked
            assert not any(piece + edge in out or edge + piece in out for edge in "….*"), out
            assert not out.removesuffix("…").endswith(piece) and not out.startswith(piece), out


@given(key=keys, text=st.text(FILLER_CHARS, max_size=MAX_ERROR_CHARS))
def test_text_without_a_key_is_left_as_it_is(key: str, text: str) -> None:
    assert bounded(text, [key.removeprefix("sk-")]) == text


def test_openais_masked_401_echo_keeps_neither_head_nor_tail() -> None:
    """OpenAI's documented 401 message shows the key's first characters and its last four around asterisks."""
    echo = (f"Incorrect API key provided: {KEY[:10]}{'*' * 40}{KEY[-4:]}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.")
    out = bounded(echo, [KEY])
    assert KEY[-4:] not in out and KEY[:8] not in out[:60] and "You can find your API key" in out


def test_a_huge_body_full_of_keys_is_scrubbed_within_a_bound() -> None:
    import time

    body = (KEY + "x") * 200_000 + KEY[:30]  # ~11 MB
    started = time.perf_counter()
    out = bounded(body, [KEY])
    assert time.perf_counter() - started < 2.0
    assert_no_piece(KEY, out)


# -- every path provider text takes to an error, against a real server ---------------------------------------
@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with hostile_server() as server:
        yield server


@pytest.fixture(autouse=True)
def forget_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The keys these tests make up (``sk-000...`` among them) are remembered by the process: keep them to this
    module, or they would mask ``000000`` in the messages of later tests."""
    monkeypatch.setattr(scrub, "_remembered", {})


CONTENT_TYPES = ["text/plain", "text/html; charset=utf-8", "application/json", "application/problem+json",
                 "application/octet-stream", "text/event-stream"]


def error_body(kind: str, text: str) -> bytes:
    """``text`` as the body a server of that media type would send: OpenAI's error JSON, a problem detail
    (RFC 9457: ``detail``), or the text as it is."""
    if kind == "application/json":
        return json.dumps({"error": {"message": text, "type": "invalid_request_error", "code": None}}).encode()
    if kind == "application/problem+json":
        return json.dumps({"type": "about:blank", "title": "Bad Request", "status": 400, "detail": text}).encode()
    return text.encode()


def every_text(exc: BaseException | None) -> str:
    """The message of an exception and of every exception it was raised from."""
    texts = []
    while exc is not None:
        texts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(texts)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(key=KEY, before="x" * 170, after=" tail", kind="text/plain", status=400, on_error="null")  # as reported
@example(key=KEY, before="<p>" * 63, after="</p>", kind="text/html", status=422, on_error="raise")
@example(key=KEY, before="y" * 185, after="", kind="application/octet-stream", status=413, on_error="null")
@given(key=keys, before=fillers, after=fillers, kind=st.sampled_from(CONTENT_TYPES),
       status=st.sampled_from([200, 400, 401, 413, 422, 429, 500, 503]),
       on_error=st.sampled_from(["null", "raise"]))
def test_a_body_that_echoes_the_key_leaves_no_piece_of_it_in_any_error(
        hostile: HostileServer, key: str, before: str, after: str, kind: str, status: int, on_error: str) -> None:
    """Error column, dead letters and raised errors (the row's ``RowFailedError``, the run's fatal 401): the key
    at any offset of a body of any length and media type, with any status (200: an unreadable answer)."""
    hostile.reset(POISON=Answer(error_body(kind, before + key + after), status=status,
                                headers={"content-type": kind}))
    llm = OpenAICompatibleProvider("m", base_url=hostile.base_url, api_key=key)
    options = RunOptions(on_error=on_error, retry=RetryPolicy(max_attempts=1))  # type: ignore[arg-type]
    try:
        out = prompt(pa.table({"text": ["fine", "POISON"]}), "{text}", provider=llm, options=options)
    except (AIAssetsError, RowFailedError) as exc:
        assert_no_piece(key, every_text(exc))
        return
    error = out.table.column("response_error").to_pylist()[1]
    assert error, "the echoed body must be the row's error"
    assert_no_piece(key, error)
    assert_no_piece(key, "\n".join(out.failed.table().column(DEAD_ERROR).to_pylist()))


def test_a_materialization_keeps_the_key_out_of_the_table_dead_letters_and_metadata(
        hostile: HostileServer, tmp_path: Path) -> None:
    """The Dagster path: the output asset's error column, the dead-letter asset and the materialization's
    metadata, after a 400 whose plain-text body prints the request's Authorization header."""
    hostile.reset(POISON=Answer(("x" * 170 + f"Authorization: Bearer {KEY}\n" + "y" * 100).encode(), status=400,
                                headers={"content-type": "text/plain"}))

    @dg.asset
    def notes() -> pa.Table:
        return pa.table({"text": ["fine", "POISON", "also fine"]})

    checked = prompt_asset("checked", notes, template="{text}", dead_letter=True, max_error_rate=1.0,
                           options=RunOptions(on_error="null", retry=RetryPolicy(max_attempts=1)))
    out = ParquetIOManager(root=str(tmp_path / "out"))
    resources = {"llm": OpenAICompatibleResource(model="m", base_url=hostile.base_url, api_key=KEY),
                 "io_manager": out, "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite"))}
    result = dg.materialize([notes, checked], resources=resources)
    assert result.success
    errors = out.store(dg.AssetKey("checked"), {}).read().column("checked_error").to_pylist()
    assert errors[1] and errors[0] is None
    letters = out.store(dg.AssetKey("checked_dead_letter"), {}).read().column(DEAD_ERROR).to_pylist()
    assert len(letters) == 1
    metadata = [str(value) for event in result.get_asset_materialization_events()
                for value in event.materialization.metadata.values()]
    assert_no_piece(KEY, "\n".join([*errors[1:2], *letters, *metadata]))


AZURE_KEY = "azq" + "7R4T6Y1U8I3O5P0A2S4D6F8G1H3J5K7"
HEADER_KEY = "hdr" + "9Z2X4C6V8B0N1M3Q7W2E9R4T6Y1U8I3"


def test_a_credential_in_the_base_url_query_or_a_header_is_masked_and_the_query_is_kept(
        hostile: HostileServer, server: FakeOpenAIServer) -> None:
    """Azure OpenAI's endpoints take ``?api-version=`` (and accept ``api-key`` as a query parameter) and many
    gateways an ``x-api-key`` header (Azure OpenAI REST reference, "Authentication"): the path goes before the
    query, and both values are secrets like the API key, also when a body echoes them."""
    echo = f"upstream said: bad request {AZURE_KEY} with header {HEADER_KEY}".encode()
    hostile.script = {"echo": Answer(echo, status=400, headers={"content-type": "text/plain"})}
    llm = OpenAICompatibleProvider("m", base_url=f"{hostile.base_url}?api-version=2024-10-21&api-key={AZURE_KEY}",
                                   api_key="k", headers={"x-api-key": HEADER_KEY})
    assert AZURE_KEY not in repr(llm) and "api-version=2024-10-21" in repr(llm)
    out = prompt(pa.table({"t": ["fine", "echo"]}), "{t}", provider=llm,
                 options=RunOptions(on_error="null", retry=RetryPolicy(max_attempts=1)))
    assert out.table.column("response").to_pylist()[0] is not None
    error = out.table.column("response_error").to_pylist()[1]
    assert error is not None
    for secret in (AZURE_KEY, HEADER_KEY):
        assert_no_piece(secret, error)
    routed = OpenAICompatibleProvider("m", base_url=f"{server.base_url}?api-version=2024-10-21", api_key="k")
    assert prompt(pa.table({"t": ["x"]}), "{t}", provider=routed).table.column("response")[0].as_py()
    assert server.stats().paths == {"/v1/chat/completions": 1}  # the path before the query, not after it
