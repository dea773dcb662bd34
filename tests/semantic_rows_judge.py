"""A deterministic judge on 127.0.0.1 for the semantic row operators: an OpenAI-compatible ``/v1/chat/completions``
that answers as a model that reads the documents would, from facts a test planted in them.

The answers follow the request shapes of OpenAI's Chat Completions API (``response_format`` ``json_schema``:
the content is the JSON instance; a plain request: text), and its failures are the documented ones: HTTP 503
"service unavailable" (retryable, OpenAI's error codes page) while ``down`` is set, and a 200 whose content is not
JSON for a document holding ``MALFORMED`` (a model that ignores the schema, which OpenAI documents can happen in
JSON mode without strict schemas). What it answers:

* a comparison ("compare two documents"): the document whose ``score=`` is higher, as perceived: the score plus
  a noise fixed per document (seeded, up to ``noise``), so the judge is consistent but imperfect, as LLM
  rankers are;
* a verdict ("Decide whether"): ``keep`` when the document's ``score=`` is over 50;
* an embedding (``/v1/embeddings``): a unit vector whose cosine with a text without a score (the query) grows
  with the document's score, so an embedding pre-ranking keeps the right candidates;
* anything else (an aggregation): ``value=<the sum of every value= in the documents>``, so a correct fold of
  partial sums gives the total.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import threading
from collections import Counter
from typing import Any

from aiohttp import web

SCORE = re.compile(r"score=(-?[0-9.]+)")
VALUE = re.compile(r"value=(-?[0-9]+)")


def perceived(document: str, noise: float) -> float:
    found = SCORE.search(document)
    score = float(found.group(1)) if found else 0.0
    jitter = int(hashlib.sha256(document.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return score + noise * (2 * jitter - 1)


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


class Judge:
    def __init__(self, noise: float = 0.0) -> None:
        self.noise = noise
        self.down = False
        self.down_after: int | None = None
        """Answer this many requests, then be down (a provider failing mid-way)."""
        self.questions: list[str] = []
        self.seen: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> int:
        return sum(self.seen.values())

    def start(self) -> Judge:
        self._thread.start()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app)
        asyncio.run_coroutine_threadsafe(self._runner.setup(), self._loop).result()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        asyncio.run_coroutine_threadsafe(site.start(), self._loop).result()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _embeddings(self, request: web.Request) -> web.Response:
        """An embedding whose cosine with any text without a score (the query) grows with the document's score."""
        data = await request.json()
        inputs = data["input"] if isinstance(data["input"], list) else [data["input"]]
        self.seen["embed"] += 1
        vectors = []
        for text in inputs:
            found = SCORE.search(text)
            angle = math.pi / 2 * (1 - float(found.group(1)) / 100) if found else 0.0
            vectors.append([math.cos(angle), math.sin(angle)])
        return web.json_response({"object": "list", "model": "embed",
                                  "data": [{"object": "embedding", "index": i, "embedding": v}
                                           for i, v in enumerate(vectors)],
                                  "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}})

    async def _chat(self, request: web.Request) -> web.Response:
        data = await request.json()
        messages = data.get("messages", [])
        system = next((text_of(m["content"]) for m in messages if m.get("role") == "system"), "")
        user = next((text_of(m["content"]) for m in messages if m.get("role") == "user"), "")  # not a re-ask
        kind = "compare" if "compare two documents" in system else "verdict" if "Decide whether" in system \
            else "aggregate"
        self.seen[kind] += 1
        self.questions.append(user)
        if self.down_after is not None and sum(self.answered.values()) >= self.down_after:
            self.down = True
        if self.down:
            return web.json_response({"error": {"message": "service unavailable", "type": "server_error"}},
                                     status=503)
        self.answered[kind] += 1
        if "MALFORMED" in user:
            content = "I think the first one, probably."
        elif kind == "compare":
            first, _, second = user.partition("\n\nDocument B:\n")
            better = "A" if perceived(first.removeprefix("Document A:\n"), self.noise) >= \
                perceived(second, self.noise) else "B"
            content = json.dumps({"better": better})
        elif kind == "verdict":
            found = SCORE.search(user)
            content = json.dumps({"keep": bool(found and float(found.group(1)) > 50)})
        else:
            content = f"value={sum(int(v) for v in VALUE.findall(user))}"
        tokens = 1 + len(user) // 4
        return web.json_response({
            "id": "judge", "object": "chat.completion", "created": 0, "model": data.get("model", "judge"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": tokens, "completion_tokens": 4, "total_tokens": tokens + 4}})
