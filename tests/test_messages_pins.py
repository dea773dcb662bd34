"""Journal keys survive the neutral message contract: the request body every built-in provider builds for the same
rows is byte-for-byte the body it built when providers received OpenAI-shaped dicts.

The journal key is ``cache_key(provider identity, request body)`` (``ai_assets.runtime.cache``); a body that
changes by one byte is a new key, and every row of every user's journal would be sent and paid for again. The
hashes below were computed with the code *before* ``ai_assets.providers.messages`` existed (prompt() building
``{"role", "content"}`` dicts and ``ImageColumn`` / ``FileColumn`` OpenAI content parts) and must never change.

Cases: text, system message, image bytes (a data URL at OpenAI, a base64 ``image`` block at Anthropic), an image
URL, a PDF and a text file (a ``document`` block at Anthropic), WAV audio (OpenAI's ``input_audio``), structured
output in each instructor mode we use, the Responses API, Anthropic's cache breakpoints on the system message and
on the template head (``order_by_prefix``), llama.cpp and a failover chain; and raw OpenAI-shaped dicts given to
``chat_request`` directly (users who build their own messages).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import BaseModel

from ai_assets import FileColumn, ImageColumn, OpenAICompatibleProvider, PromptParams, RunOptions
from ai_assets.functions.prompt import PromptTask
from ai_assets.providers.anthropic import AnthropicProvider
from ai_assets.providers.failover import Failover
from ai_assets.providers.llama_cpp import LlamaCppProvider

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\n%%EOF"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32)
TXT = "plain text file, ünïcode\n".encode()


class Insight(BaseModel):
    sentiment: str
    aspects: list[str]


def table() -> pa.Table:
    return pa.table({
        "text": ["first row", "second row, the battery"],
        "img": [PNG, PNG[:-1] + b"\x01"],
        "url": ["https://example.com/a.png", "https://example.com/b.jpg"],
        "pdf": [PDF, PDF + b"\n"],
        "name": ["docs/a.pdf", "b.pdf"],
        "txt": [TXT, TXT + b"more"],
        "wav": [WAV, WAV + b"\x00\x00"],
    })


def providers(tmp: Path) -> dict[str, Any]:
    gguf = tmp / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    local = OpenAICompatibleProvider("qwen", base_url="http://127.0.0.1:9/v1", api_key="k")
    return {
        "openai-local": local,
        "openai-tools": OpenAICompatibleProvider("gpt-4o-mini", base_url="https://api.openai.com/v1", api_key="k"),
        "openai-json": OpenAICompatibleProvider("m", base_url="http://127.0.0.1:9/v1", api_key="k", mode="json_mode"),
        "openai-responses": OpenAICompatibleProvider("gpt-4o-mini", base_url="https://api.openai.com/v1",
                                                     api_key="k", api="responses"),
        "anthropic": AnthropicProvider(base_url="http://127.0.0.1:9", api_key="k"),
        "anthropic-nocache": AnthropicProvider(base_url="http://127.0.0.1:9", api_key="k", cache_prefix=False),
        "llama.cpp": LlamaCppProvider(gguf),
        "failover": Failover(local, AnthropicProvider(base_url="http://127.0.0.1:9", api_key="k")),
    }


TEMPLATES: dict[str, Any] = {
    "text": "Summarize: {text}",
    "image": ["Look at this:", ImageColumn("img"), "Q: {text}"],
    "image-url": ["{text}", ImageColumn("url", as_url=True, detail="low")],
    "pdf": ["Read it", FileColumn("pdf", filename_column="name"), "then {text}"],
    "text-file": [FileColumn("txt")],
    "audio": ["Hear", FileColumn("wav")],
}
REFUSED = {("anthropic", "audio"), ("anthropic-nocache", "audio"), ("failover", "audio"), ("llama.cpp", "pdf"),
           ("llama.cpp", "text-file")}
"""Audio to Anthropic and files to llama.cpp were sent as they came and refused by the server (a 400 per row);
they are now refused before sending (tests/test_messages_hostile.py), so there is no old body to keep (the 16
llama.cpp file bodies computed before were removed from the pins for that reason)."""


def bodies(task: PromptTask) -> str:
    plan = task.plan(table().to_batches()[0])
    rows = [None if k is None else [k, plan.payloads[k]] for k in plan.keys]
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def prompt_cases(tmp: Path) -> dict[str, str]:
    out = {}
    for pname, provider in providers(tmp).items():
        for tname, template in TEMPLATES.items():
            if (pname, tname) in REFUSED:
                continue
            for structured in (False, True):
                for system in (None, "Be brief."):
                    for by_prefix in (False, True):
                        task = PromptTask(template, provider, Insight if structured else None, system, "out",
                                          PromptParams(temperature=0, max_output_tokens=50),
                                          RunOptions(order_by_prefix=by_prefix))
                        name = f"{pname}/{tname}/{'schema' if structured else 'text'}/{system}/{by_prefix}"
                        out[name] = bodies(task)
    return out


RAW: dict[str, list[dict[str, Any]]] = {
    "plain": [{"role": "user", "content": "hello"}],
    "system+parts": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Look:"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/x.png", "detail": "high"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}]}],
    "two-system": [{"role": "system", "content": "One."}, {"role": "system", "content": "Two."},
                   {"role": "user", "content": "hi"}],
    "turns": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
              {"role": "user", "content": [{"type": "text", "text": "q2"}]}],
}


def raw_cases(tmp: Path) -> dict[str, str]:
    out = {}
    for pname, provider in providers(tmp).items():
        for rname, messages in RAW.items():
            if (pname, rname) == ("llama.cpp", "system+parts"):  # holds a PDF: refused (REFUSED), pins removed
                continue
            for model in (None, Insight):
                body = provider.chat_request(messages, model, {"temperature": 0})
                name = f"raw/{pname}/{rname}/{model and model.__name__}"
                out[name] = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return out


PINNED: dict[str, str] = json.loads((Path(__file__).parent / "messages_pins.json").read_text())
"""Case -> SHA-256 of its bodies, computed with the OpenAI-shaped code (424 cases); never regenerate them."""


@pytest.mark.parametrize("which", ["prompt", "raw"])
def test_request_bodies_are_byte_identical_to_the_openai_shaped_ones(tmp_path: Path, which: str) -> None:
    measured = prompt_cases(tmp_path) if which == "prompt" else raw_cases(tmp_path)
    pinned = {k: v for k, v in PINNED.items() if k.startswith("raw/") == (which == "raw")}
    assert measured.keys() == pinned.keys()
    changed = [name for name in measured if measured[name] != pinned[name]]
    assert not changed, f"{len(changed)} request bodies changed (journal keys would change): {changed[:10]}"
