"""Fault rules and statistics of the fake OpenAI-compatible server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FaultKind = Literal["400", "401", "404", "429", "500", "502", "503", "529", "timeout", "reset", "invalid_json",
                    "schema_violation"]


@dataclass(frozen=True)
class Fault:
    """One fault rule. The first rule that matches a request decides its fate.

    kind: an HTTP status to answer with, ``timeout`` (answer only after ``delay`` seconds), ``reset`` (drop the
    connection), ``invalid_json`` or ``schema_violation`` (a 200 whose content breaks the requested format).
    match: only prompts containing this substring; None matches every prompt.
    rate: the share of distinct prompts affected: exactly ``round(rate * n)`` of the first n prompts seen.
    attempts: affect only the first ``attempts`` requests of a prompt; None affects every request.
    model: only requests that name this model (a cheap model of a cascade that gets some rows wrong).
    Batch API lines are matched the same way (an HTTP status becomes a failed line).
    """

    kind: FaultKind
    match: str | None = None
    rate: float = 1.0
    attempts: int | None = 1
    retry_after: float | None = None
    retry_after_ms: int | None = None
    delay: float = 0.0
    model: str | None = None

    def matches(self, key: str, attempt: int, model: str | None = None) -> bool:
        if self.match is not None and self.match not in key:
            return False
        if self.model is not None and self.model != model:
            return False
        return self.attempts is None or attempt <= self.attempts


class Rule:
    """A fault and its choice of prompts: each new prompt is picked when that keeps the share at ``rate``."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.chosen: dict[str, bool] = {}
        self.picked = 0

    def applies(self, key: str, attempt: int, model: str | None = None) -> bool:
        if not self.fault.matches(key, attempt, model):
            return False
        if key not in self.chosen:
            pick = self.picked + 1 <= round(self.fault.rate * (len(self.chosen) + 1))
            self.picked += pick
            self.chosen[key] = pick
        return self.chosen[key]


@dataclass(frozen=True)
class BatchBehaviour:
    """How the fake Batch API behaves: ``delay`` seconds from creation to completion; ``expire_after`` answers
    only that many lines, then expires the batch (the rest become ``batch_expired`` errors); ``fail_validation``
    fails every new batch at validation; ``lose_create_responses`` and ``control_delay``: see below."""

    delay: float = 0.2
    expire_after: int | None = None
    fail_validation: bool = False
    lose_create_responses: int = 0
    """The first this many batch creations happen, but their response is lost (the connection drops)."""
    control_delay: float = 0.0
    """Seconds before every files / batches request is answered (a slow control plane)."""


@dataclass
class ServerStats:
    requests: int = 0
    chat_requests: int = 0
    responses_requests: int = 0
    embedding_requests: int = 0
    embedding_inputs: int = 0
    faults_injected: int = 0
    rate_limited: int = 0
    refusals: list[float] = field(default_factory=list)
    """When (``time.monotonic()``) each request the rate limit refused arrived."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens answered from the prompt-prefix cache (reported as ``cached_tokens``)."""
    cache_write_tokens: int = 0
    """Prompt tokens written to the prompt cache (the Anthropic fake's ``cache_creation_input_tokens``)."""
    files_uploaded: int = 0
    batches_created: int = 0
    batch_lines: int = 0
    by_key: dict[str, int] = field(default_factory=dict)
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    timeline: list[tuple[float, int]] = field(default_factory=list)
    """(arrival time, tokens charged) of every chat, responses and embedding request."""
    file_parts: list[dict[str, str]] = field(default_factory=list)
    """Every file content part received: its type, filename and MIME type."""
    transcriptions: int = 0
    """Requests to ``/audio/transcriptions``."""
    audio_parts: list[dict[str, str]] = field(default_factory=list)
    """Every ``input_audio`` part received: its format and decoded size in bytes."""
    models: dict[str, int] = field(default_factory=dict)
    """Requests per model named in the request body."""
    sampling: dict[str, int] = field(default_factory=dict)
    """Requests per sampling settings sent (a JSON object of the body's temperature, top_p and token caps)."""
    embedding_batches: list[int] = field(default_factory=list)
    """The number of inputs of every embedding request."""
    headers: dict[str, str] = field(default_factory=dict)
    """The last value seen of the authentication and account headers (authorization, api-key, openai-*)."""
    paths: dict[str, int] = field(default_factory=dict)
    """Requests per endpoint path."""
    prompt_cache_keys: dict[str, int] = field(default_factory=dict)
    """Chat requests per ``prompt_cache_key`` sent."""
