"""Generated entities with a known truth, and a verifier LLM that answers from it, for the pair operators' tests and
benchmark.

The entities are company names; their variants are the kinds of noise entity-resolution benchmarks use (typos,
abbreviated legal suffixes and words, case, dropped suffixes: the "Abt-Buy" / "DBLP-Scholar" style of dirty
duplicates). The verifier is a real HTTP server on 127.0.0.1 speaking the OpenAI Chat Completions shape (a
``json_schema`` response format answered with a JSON object in ``choices[0].message.content``, usage in ``usage``,
as OpenAI's API reference documents); it judges a pair 'A: "..."\\n\\nB: "..."' (JSON strings) by the truth, so
recall and F1 measure the blocking and clustering, not a model. It counts requests and can go down (HTTP 503,
OpenAI's "server overloaded") or answer malformed JSON for chosen texts.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FIRST = ["North", "Blue", "Silver", "Green", "Red", "Bright", "Golden", "Iron", "Crystal", "Swift", "Atlas",
         "Summit", "Pioneer", "Harbor", "Maple", "Cedar", "Falcon", "Orion", "Vertex", "Quantum", "Stellar", "Delta",
         "Echo", "Nova", "Pacific", "Alpine", "Granite", "Copper", "Amber", "Lunar"]
SECOND = ["wind", "river", "stone", "field", "bridge", "gate", "peak", "wave", "light", "forge", "brook", "ridge",
          "crest", "vale", "port", "line", "star", "wood", "path", "spring"]
TRADE = ["Logistics", "Pharmaceuticals", "Software", "Robotics", "Foods", "Insurance", "Energy", "Textiles",
         "Analytics", "Aerospace", "Biotech", "Mining", "Publishing", "Shipping", "Semiconductors", "Hotels",
         "Consulting", "Motors", "Telecom", "Chemicals"]
SUFFIX = {"Incorporated": "Inc.", "Corporation": "Corp.", "Limited": "Ltd.", "Company": "Co.",
          "International": "Intl."}
SHORT = {"Pharmaceuticals": "Pharma", "Technologies": "Tech", "Semiconductors": "Semis", "Logistics": "Logistix",
         "Telecom": "Telecomm", "Analytics": "Analytix"}


def entity_names(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < n:
        suffix = rng.choice(list(SUFFIX))
        names.add(f"{rng.choice(FIRST)}{rng.choice(SECOND)} {rng.choice(TRADE)} {suffix}")
    return sorted(names)


def variant(name: str, rng: random.Random) -> str:
    """A dirty duplicate of ``name``: one or two of abbreviate, typo, case, drop the suffix."""
    words = name.split()
    for _ in range(rng.randint(1, 2)):
        kind = rng.choice(["abbreviate", "typo", "case", "drop"])
        if kind == "abbreviate":
            words = [SUFFIX.get(w, SHORT.get(w, w)) for w in words]
        elif kind == "typo":
            i = rng.randrange(len(words[0]) - 1)
            word = words[0]
            words[0] = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        elif kind == "case":
            words = [w.lower() for w in words] if rng.random() < 0.5 else [w.upper() for w in words]
        elif len(words) > 2:
            words = words[:-1]
    return " ".join(words)


@dataclass
class World:
    """Entities, their rows, and the truth: which text belongs to which entity."""

    truth: dict[str, int] = field(default_factory=dict)

    def add(self, text: str, entity: int) -> str:
        self.truth.setdefault(text, entity)
        return text

    def same(self, a: str, b: str) -> bool:
        return a in self.truth and self.truth.get(a) == self.truth.get(b)


def join_world(n: int, seed: int = 0) -> tuple[World, list[str], list[str]]:
    """``n`` entities: a left text (a variant) and a right text (the clean name) each."""
    rng = random.Random(seed)
    world = World()
    names = entity_names(n, seed)
    right = [world.add(name, e) for e, name in enumerate(names)]
    left = []
    for e, name in enumerate(names):
        text = variant(name, rng)
        while text in world.truth and world.truth[text] != e:
            text = variant(name, rng)
        left.append(world.add(text, e))
    return world, left, right


def dedup_world(n: int, seed: int = 0, most: int = 4) -> tuple[World, list[str], list[int]]:
    """``n`` entities with 1 to ``most`` rows each (the clean name and variants); the rows and their entity."""
    rng = random.Random(seed)
    world = World()
    rows, entities = [], []
    for e, name in enumerate(entity_names(n, seed)):
        for i in range(rng.randint(1, most)):
            text = name if i == 0 else variant(name, rng)
            if text in world.truth and world.truth[text] != e:
                continue
            rows.append(world.add(text, e))
            entities.append(e)
    return world, rows, entities


def pairwise_f1(predicted: list[Any], truth: list[int]) -> float:
    """Pairwise F1 of a clustering (the standard entity-resolution measure): pairs of rows put together."""
    def pairs(labels: list[Any]) -> set[tuple[int, int]]:
        groups: dict[Any, list[int]] = {}
        for i, label in enumerate(labels):
            if label is not None:
                groups.setdefault(label, []).append(i)
        return {(a, b) for members in groups.values() for x, a in enumerate(members) for b in members[x + 1:]}

    got, want = pairs(predicted), pairs(truth)
    if not got and not want:
        return 1.0
    tp = len(got & want)
    precision = tp / len(got) if got else 0.0
    recall = tp / len(want) if want else 0.0
    return 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)


class Verifier:
    """The verifier LLM: a real HTTP server answering pair verdicts from ``world``'s truth."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.requests = 0
        self.pairs: list[tuple[str, str]] = []
        self.down_after: int | None = None
        self.malformed: set[str] = set()
        self.by_model: dict[str, int] = {}
        self.lock = threading.Lock()

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        content = body["messages"][-1]["content"]
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content)
        a, _, b = content.removeprefix("A: ").partition("\n\nB: ")
        a, b = json.loads(a), json.loads(b)  # each side a JSON string (join.PAIR_TEMPLATE)
        with self.lock:
            self.requests += 1
            if self.down_after is not None and self.requests > self.down_after:
                return 503, {"error": {"message": "The server is overloaded", "type": "server_error"}}
            self.pairs.append((a, b))
            self.by_model[str(body.get("model"))] = self.by_model.get(str(body.get("model")), 0) + 1
        if a in self.malformed or b in self.malformed:
            text = '{"match": tru'
        else:
            text = json.dumps({"match": self.world.same(a, b), "confidence": 0.97})
        usage = {"prompt_tokens": 20 + len(content) // 4, "completion_tokens": 9, "total_tokens": 29 + len(content)
                 // 4}
        return 200, {"id": "chatcmpl-verifier", "object": "chat.completion", "model": body.get("model", "verifier"),
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}], "usage": usage}


@contextmanager
def serve(verifier: Verifier) -> Iterator[str]:
    """The verifier on 127.0.0.1; yields its base URL (``.../v1``)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            status, reply = verifier.answer(body)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
