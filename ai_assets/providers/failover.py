"""``Failover(primary, *fallbacks)``: a Prompter that answers each row with the first provider of a chain that is
up, with a circuit breaker per provider whose state is shared by every worker process.

What fails over (to the next provider, within the same attempt): a transient failure of a provider (5xx, 529
overloaded, a timeout, a refused or dropped connection) and a 429 (the row is answered now by the next provider
rather than waiting for the busy one; a 429 proves the provider is up, so it does not count towards its breaker).
What does not: a 4xx about the request (400, 422: the same input fails everywhere; the row fails), an answer that
does not validate (re-asked of the provider that gave it), and 401 / 403 / 404 (the run stops, as without a
fallback). When every provider of the chain failed, the attempt fails as transient and the engine retries the
chain within ``RetryPolicy.max_attempts``.

Each provider but the last has a breaker (``ai_assets.runtime.ratelimit.breaker``): after ``threshold``
consecutive transient failures, seen by any process sharing its store, nobody sends to it for ``cooldown_s``;
then one request probes it, and its success closes the breaker. The last provider is always tried.

The journal key of a row is the chain's identity (every provider's identity, in order) and every provider's
request for it: whichever provider answered, the answer is kept under that key with the name of the provider that
gave it (``<output>_provider``), so a re-run with the same chain never sends that row again, to the primary or to
anyone. A run with another chain (or with the primary alone) has other keys: answers of different models are not
taken for each other. The account's rate limit (and the limits learned from headers) are the primary's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from ai_assets.providers.messages import MessagesIn, UnsupportedPartError, neutral
from ai_assets.providers.protocols import Prompter, RemoteTextEmbedder, SharedLimit, chat_request
from ai_assets.runtime.engine import Connection, Reply, SelfTimed
from ai_assets.runtime.errors import (
    ConfigError,
    InvalidOutputError,
    NotSupportedError,
    TransientError,
    bounded,
)
from ai_assets.runtime.ratelimit import RateLimit
from ai_assets.runtime.ratelimit.breaker import Breaker, BreakerSettings, Verdict
from ai_assets.runtime.tokens import request_messages

RATE_LIMITED = 429


class Failover:
    """Answer with ``primary``; on its transient failures (or while its breaker is open), with each of
    ``fallbacks`` in turn. Every provider must be a ``Prompter``.

        >>> llm = Failover(OpenAICompatibleProvider("gpt-4o-mini"),
        ...                OpenAICompatibleProvider("qwen", base_url="http://vllm:8000/v1"),
        ...                breaker=BreakerSettings(threshold=5, cooldown_s=30, store="redis://redis:6379/0"))
        >>> prompt(table, "Summarize: {text}", provider=llm)  # adds response, response_error, response_provider
    """

    names_answerer = True
    """Its answers say which provider gave them (``{"answer": ..., "provider": name}``)."""

    def __init__(self, primary: Prompter, *fallbacks: Prompter, breaker: BreakerSettings | None = None) -> None:
        chain = (primary, *fallbacks)
        if not fallbacks:
            raise ConfigError("Failover needs at least one fallback provider after the primary")
        for member in chain:
            if not isinstance(member, Prompter):
                raise NotSupportedError(member, "prompt (as a Failover member)")
        self.chain: tuple[Prompter, ...] = chain
        self.breaker = breaker or BreakerSettings()
        self.names = member_names([dict(m.identity()) for m in chain])

    def __repr__(self) -> str:
        return f"Failover({', '.join(repr(m) for m in self.chain)})"

    def identity(self) -> Mapping[str, Any]:
        return {"provider": "failover", "chain": [dict(m.identity()) for m in self.chain]}

    def chat_request(self, messages: MessagesIn, response_model: type[BaseModel] | None,
                     params: Mapping[str, Any]) -> dict[str, Any]:
        """Every member's request for the row; a member that cannot send one of its parts (audio to Anthropic) has
        None there and is passed over for this row, so a row the primary can answer is answered. A row no member
        can send is the first member's ``UnsupportedPartError`` (the row's error)."""
        parsed = neutral(messages)
        requests: list[dict[str, Any] | None] = []
        refused: list[UnsupportedPartError] = []
        for member in self.chain:
            try:
                requests.append(chat_request(member, parsed, response_model, params))
            except UnsupportedPartError as exc:
                requests.append(None)
                refused.append(exc)
        sent = [r for r in requests if r is not None]
        if not sent:
            raise refused[0]
        # "messages" is the first sender's (the same list, not a copy): what the token estimate reads.
        return {"failover": requests, "messages": request_messages(sent[0])}

    def account_limit(self) -> tuple[RateLimit, str] | None:
        primary = self.chain[0]
        limit: tuple[RateLimit, str] | None = primary.account_limit() if isinstance(primary, SharedLimit) else None
        return limit

    def breakers(self) -> list[Breaker]:
        """A breaker for each provider but the last, in the breaker's store, else the provider's limit store."""
        return breakers_of(self.chain, [m.identity() for m in self.chain], self.breaker)

    @asynccontextmanager
    async def connect(self, response_model: type[BaseModel] | None, concurrency: int, timeout_s: float,
                      **options: Any) -> AsyncIterator[FailoverConnection]:
        async with AsyncExitStack() as stack:
            connections = []
            for member in self.chain:
                connect: Any = member.connect
                connections.append(await stack.enter_async_context(
                    connect(response_model, concurrency, timeout_s, **options)))
            members = [Member(name, connection, breaker) for name, connection, breaker in
                       zip(self.names, connections, [*self.breakers(), None], strict=True)]
            yield FailoverConnection(members, timeout_s)


class EmbeddingFailover:
    """Embeddings from ``primary``, and from each of ``fallbacks`` in turn on its transient failures, with the
    breakers of ``Failover``. Every member must serve the **same embedding model and dimensions** (one model on
    several endpoints: OpenAI and an Azure deployment of it, two vLLM replicas): vectors of different models do not
    share a space, so a column mixing them would be silently wrong; a chain of different models is refused. Its
    vectors are therefore interchangeable, and the output has no ``_provider`` column."""

    def __init__(self, primary: RemoteTextEmbedder, *fallbacks: RemoteTextEmbedder,
                 breaker: BreakerSettings | None = None) -> None:
        chain = (primary, *fallbacks)
        if not fallbacks:
            raise ConfigError("EmbeddingFailover needs at least one fallback provider after the primary")
        for member in chain:
            if not isinstance(member, RemoteTextEmbedder):
                raise NotSupportedError(member, "embed_text (as an EmbeddingFailover member)")
        models = {(m.embedding_identity().get("model"), m.embedding_identity().get("dimensions")) for m in chain}
        if len(models) > 1:
            raise ConfigError(f"EmbeddingFailover: every member must embed with the same model and dimensions "
                              f"(vectors of different models do not share a space), got {sorted(map(str, models))}")
        self.chain: tuple[RemoteTextEmbedder, ...] = chain
        self.breaker = breaker or BreakerSettings()
        self.max_inputs = min(m.max_inputs for m in chain)
        self.max_request_tokens = min(m.max_request_tokens for m in chain)

    def embedding_identity(self) -> Mapping[str, Any]:
        return {"provider": "failover", "chain": [dict(m.embedding_identity()) for m in self.chain]}

    def embedding_request(self, texts: Sequence[str]) -> dict[str, Any]:
        return {"failover": [m.embedding_request(texts) for m in self.chain]}

    def account_limit(self) -> tuple[RateLimit, str] | None:
        primary = self.chain[0]
        limit: tuple[RateLimit, str] | None = primary.account_limit() if isinstance(primary, SharedLimit) else None
        return limit

    @property
    def dimension(self) -> int | None:
        value = getattr(self.chain[0], "dimension", None)
        return value if isinstance(value, int) else None

    @asynccontextmanager
    async def connect_embeddings(self, concurrency: int, timeout_s: float) -> AsyncIterator[FailoverConnection]:
        async with AsyncExitStack() as stack:
            connections = [await stack.enter_async_context(m.connect_embeddings(concurrency, timeout_s))
                           for m in self.chain]
            names = member_names([dict(m.embedding_identity()) for m in self.chain])
            breakers = [*breakers_of(self.chain, [m.embedding_identity() for m in self.chain], self.breaker), None]
            members = [Member(n, c, b) for n, c, b in zip(names, connections, breakers, strict=True)]
            yield FailoverConnection(members, timeout_s, names_answerer=False)


def breakers_of(chain: Sequence[Any], identities: Sequence[Mapping[str, Any]],
                settings: BreakerSettings) -> list[Breaker]:
    """A breaker for each member but the last: in the settings' store, else the member's own limit store."""
    out = []
    for member, identity in zip(chain[:-1], identities[:-1], strict=True):
        limit = getattr(member, "rate_limit", None)
        store = settings.store if settings.store is not None else getattr(limit, "store", None)
        out.append(Breaker(identity, settings, store))
    return out


@dataclass
class Member:
    name: str
    connection: Connection
    breaker: Breaker | None


class FailoverConnection:
    """Sends a row to the first member that is up; its ``Reply.value`` is ``{"answer": ..., "provider": name}``.
    Each member's request is bounded by ``timeout_s``; the whole chain by their sum (``timeout_for``)."""

    def __init__(self, members: Sequence[Member], timeout_s: float, *, names_answerer: bool = True) -> None:
        self.members = list(members)
        self.timeout_s = timeout_s
        self.names_answerer = names_answerer
        self.secrets: Sequence[str] = tuple(s for m in self.members for s in m.connection.secrets)

    def timeout_for(self, request: dict[str, Any]) -> float:
        return sum(self._bound(m, r) for m, r in zip(self.members, request["failover"], strict=True)
                   if r is not None) + 1.0

    def _bound(self, member: Member, request: dict[str, Any]) -> float:
        connection = member.connection
        return connection.timeout_for(request) if isinstance(connection, SelfTimed) else self.timeout_s

    async def send(self, request: dict[str, Any]) -> Reply:
        requests: list[dict[str, Any] | None] = request["failover"]
        at = request.get("at")
        if at is not None:  # a re-ask goes to the provider whose answer did not validate
            return await self._one(int(at), requests, "closed")
        failures: list[str] = []
        last: TransientError | None = None
        for index, member in enumerate(self.members):
            if requests[index] is None:  # it cannot send one of this row's parts
                failures.append(f"{member.name}: cannot send this row's parts")
                continue
            verdict: Verdict = "closed" if member.breaker is None else await member.breaker.ask()
            if verdict == "open":
                failures.append(f"{member.name}: circuit open")
                continue
            try:
                return await self._one(index, requests, verdict)
            except TransientError as exc:
                failures.append(f"{member.name}: {exc}")
                last = exc
        status = last.status if last is not None else None
        raise TransientError(bounded("every provider failed: " + "; ".join(failures), self.secrets),
                             retry_after=last.retry_after if last is not None else None, status=status)

    async def _one(self, index: int, requests: list[dict[str, Any] | None], verdict: Verdict) -> Reply:
        member, request = self.members[index], requests[index]
        assert request is not None  # a member without a request is passed over (send), never asked
        try:
            async with asyncio.timeout(self._bound(member, request)):
                reply = await member.connection.send(request)
        except TimeoutError as exc:
            await self._failed(member)
            raise TransientError(f"no answer within {self._bound(member, request):g}s") from exc
        except TransientError as exc:
            if exc.status == RATE_LIMITED:  # up, but busy: not an outage
                await self._answered(member, verdict)
            else:
                await self._failed(member)
            raise
        except InvalidOutputError as exc:
            await self._answered(member, verdict)
            reask = {"failover": [*requests[:index], exc.reask_request, *requests[index + 1:]], "at": index,
                     "messages": request_messages(next(r for r in requests if r is not None))}
            raise InvalidOutputError(str(exc), reask_request=reask, usage=exc.usage, raw=exc.raw) from exc
        except Exception:
            await self._answered(member, verdict)  # it answered (a 4xx, a bad body): up
            raise
        await self._answered(member, verdict)
        headers = reply.headers if index == 0 else None  # the learned limits are the primary's account's
        value = {"answer": reply.value, "provider": member.name} if self.names_answerer else reply.value
        return Reply(value, reply.usage, headers)

    async def _failed(self, member: Member) -> None:
        if member.breaker is not None:
            await member.breaker.failed()

    async def _answered(self, member: Member, verdict: Verdict) -> None:
        if member.breaker is not None and verdict != "closed":  # failures on record, or the probe: close it
            await member.breaker.succeeded()


def member_names(identities: Sequence[Mapping[str, Any]]) -> list[str]:
    """A short name per provider (``<provider>:<model>``), with the endpoint's host where two would be equal."""
    base = [f"{i.get('provider', 'provider')}:{i.get('model', '?')}" for i in identities]
    names = []
    for short, identity in zip(base, identities, strict=True):
        host = ""
        if base.count(short) > 1 and identity.get("base_url"):
            parts = urlsplit(str(identity["base_url"]))
            host = f"@{parts.hostname}:{parts.port}" if parts.port else f"@{parts.hostname}"
        names.append(short + host)
    return [name if names.count(name) == 1 else f"{name}#{i}" for i, name in enumerate(names)]
