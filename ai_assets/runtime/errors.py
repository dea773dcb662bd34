"""Errors and warnings shared by every layer. Error text is bounded and scrubbed of secrets: ``bounded`` masks
every secret, and every piece of one, before it cuts (``ai_assets.runtime.scrub``)."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ai_assets.runtime.scrub import scrub_and_cut

MAX_ERROR_CHARS = 300


class AIAssetsWarning(UserWarning):
    """Warnings raised by ai_assets itself (tests turn them into errors)."""


class AIAssetsError(Exception):
    """Base class of the errors ai_assets raises on purpose."""


class ConfigError(AIAssetsError, ValueError):
    """A setting or an argument is wrong; the message names it."""


class MissingExtraError(AIAssetsError, ImportError):
    """An optional backend is not installed; the message names the extra that installs it."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed: pip install 'ai_assets[{extra}]'")
        self.package = package
        self.extra = extra


class ProviderError(AIAssetsError):
    """A provider answered something the run cannot use (e.g. vectors of different sizes in one column)."""


class NotSupportedError(AIAssetsError, TypeError):
    """The provider does not implement the capability a function asked for."""

    def __init__(self, provider: object, capability: str) -> None:
        super().__init__(f"{capability} is not supported by provider {type(provider).__name__}")


@dataclass
class AttemptUsage:
    """Tokens one request (or, summed, every attempt of a row) was billed, in one shape for every vendor.

    ``prompt_tokens`` is every input token; the parts billed apart are kept inside it: ``cached_tokens`` (read from
    the prompt cache) and ``cache_write_tokens`` (written to it). OpenAI reports ``prompt_tokens`` with
    ``cached_tokens`` inside and bills no writes, so its figures are this shape as they come; Anthropic reports
    ``input_tokens`` *without* ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` (Messages API,
    ``usage``; "Prompt caching": total input = the three added), so ``billed_apart`` adds them up. Prices then bill
    ``plain_input_tokens`` at the input price and each cache part at its own.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Of ``prompt_tokens``, those the provider served from its prompt cache (billed at the cached rate)."""
    cache_write_tokens: int = 0
    """Of ``prompt_tokens``, those written to the prompt cache (Anthropic's ``cache_creation_input_tokens``, billed
    at the cache-write rate); 0 for vendors that bill no writes (OpenAI)."""
    reasoning_tokens: int = 0
    """Of ``completion_tokens``, those spent reasoning (billed as output; reported for insight)."""

    @classmethod
    def billed_apart(cls, input_tokens: int, output_tokens: int, *, cache_read: int = 0, cache_write: int = 0,
                     reasoning: int = 0) -> AttemptUsage:
        """Usage from a vendor whose ``input_tokens`` exclude the cache reads and writes (Anthropic)."""
        return cls(input_tokens + cache_read + cache_write, output_tokens, cache_read, cache_write,
                   min(reasoning, output_tokens))

    @property
    def plain_input_tokens(self) -> int:
        """Input tokens neither read from nor written to the prompt cache (billed at the input price)."""
        return max(0, self.prompt_tokens - self.cached_tokens - self.cache_write_tokens)

    def add(self, other: AttemptUsage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.reasoning_tokens += other.reasoning_tokens


class TransientError(AIAssetsError):
    """Worth another attempt after a wait: 408 / 429 / 5xx, timeouts, dropped connections."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        """The HTTP status that caused it, when one did (429: rate limited, 529: overloaded, ...)."""
        self.headers = headers
        """The answer's rate-limit headers, when it had some (a 429 reports the limit it hit)."""


class PermanentError(AIAssetsError):
    """Another attempt would fail the same way (400, 401, 404, ...): the row fails at once."""


class BadAnswerError(PermanentError):
    """The provider answered, but nothing usable: the row fails (the next run sends it again). ``usage`` keeps the
    tokens the answer was billed, so spending and TPM stay right."""

    def __init__(self, message: str, *, usage: AttemptUsage | None = None) -> None:
        super().__init__(message)
        self.usage = usage or AttemptUsage()


class MalformedAnswerError(BadAnswerError):
    """The answer is not of the API's shape: not JSON, a list for a body, ``choices: "x"``, ``usage`` as text, or
    over the response size cap."""


class EmptyAnswerError(BadAnswerError):
    """The answer is of the API's shape but holds no answer (no choices, ``content: null``, a refusal); the
    message keeps ``finish_reason`` and the refusal text."""


class FatalProviderError(PermanentError):
    """The provider rejects the run itself (bad key, unknown model): every row would fail, so the run stops."""


class InvalidOutputError(AIAssetsError):
    """The model answered, but the answer does not parse or validate: re-ask with ``reask_request``."""

    def __init__(self, message: str, *, reask_request: dict[str, Any], usage: AttemptUsage, raw: str) -> None:
        super().__init__(message)
        self.reask_request = reask_request
        self.usage = usage
        self.raw = raw


@dataclass
class RowFailedError(AIAssetsError):
    """A row failed after its attempts ran out (raised with ``on_error="raise"``); ``usage`` sums the tokens
    billed over all its attempts, ``last_output`` is the last answer that did not validate."""

    row: int
    attempts: int
    reason: str
    usage: AttemptUsage = field(default_factory=AttemptUsage)
    last_output: str | None = None

    def __str__(self) -> str:
        tail = f"; last output: {bounded(self.last_output, (), 120)!r}" if self.last_output else ""
        return f"row {self.row} failed after {self.attempts} attempt(s): {self.reason}{tail}"


def bounded(text: str, secrets: Iterable[str] = (), limit: int = MAX_ERROR_CHARS) -> str:
    """Mask every secret (``secrets``, and those ``remember_secrets`` registered) and every piece of one in
    ``text``, then cut it to ``limit`` characters: masked before cut, so a cut never leaves part of a key."""
    return scrub_and_cut(text, secrets, limit)


class SkipKind(enum.Enum):
    NULL = "null"
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    UNREADABLE = "unreadable"
    """The input cannot be what the request needs (an image that does not decode): refused before anything is
    sent, and counted as that row's error, not as a skip."""


@dataclass(frozen=True)
class Skip:
    """Why a row was not sent (a typed reason; its text goes into the ``<column>_error`` column)."""

    kind: SkipKind
    column: str | None = None
    part: str = "column"

    @property
    def is_error(self) -> bool:
        """The row failed (counted in ``errors``, a dead letter, raised with ``on_error="raise"``); other skips
        are rows with nothing to send."""
        return self.kind is SkipKind.UNREADABLE

    def __str__(self) -> str:
        if self.kind is SkipKind.NULL:
            return f"skipped: {self.part} {self.column!r} is null"
        if self.kind is SkipKind.TOO_LARGE:
            return f"skipped: the file in column {self.column!r} is {self.part}"
        if self.kind is SkipKind.UNREADABLE:
            return f"refused before sending: column {self.column!r}: {self.part}"
        return "skipped: empty input"
