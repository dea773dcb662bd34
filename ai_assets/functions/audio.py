"""``transcribe``: speech to text per row over ``/audio/transcriptions`` (OpenAI-compatible: whisper-1,
gpt-4o-transcribe, a local faster-whisper or vLLM server), journalled and retried like ``prompt``.

The audio bytes in a column (WAV, MP3, FLAC, OGG, M4A, WebM: what ingested files hold) go up as a multipart file, one
recording a request; the journal key is the provider, model, language, prompt and a hash of the bytes, so a re-run
pays nothing and another model or language recomputes. A recording over ``max_bytes`` (the API takes 25 MB) is not
sent and its row gets the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import PurePosixPath
from typing import Any, Unpack

import pyarrow as pa

from ai_assets.functions.templates import audio_type, check_output_column
from ai_assets.providers.protocols import SharedLimit, Transcriber, with_model
from ai_assets.runtime.cache import cache_key
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.engine import Connection, Job, RunOptions
from ai_assets.runtime.errors import ConfigError, NotSupportedError, Skip, SkipKind
from ai_assets.runtime.limits import TokenCost
from ai_assets.runtime.ratelimit import RateLimit
from ai_assets.runtime.results import Enriched, EnrichedStream, Source
from ai_assets.runtime.run import RunArgs, run_task
from ai_assets.runtime.task import OneRowJobs, Plan

MAX_AUDIO_BYTES = 25 * 1024 * 1024
class TranscribeTask(OneRowJobs):
    """One transcription request per row."""

    max_concurrency: int | None = None

    def __init__(self, column: str, provider: Transcriber, output_column: str, language: str | None,
                 prompt: str | None, filename_column: str | None, max_bytes: int, options: RunOptions) -> None:
        check_output_column(output_column, [column], "transcribe")
        self.column, self.provider, self.output_column = column, provider, output_column
        self.language, self.prompt, self.filename_column = language, prompt, filename_column
        self.max_bytes, self.options = max_bytes, options
        self.identity = {**provider.transcription_identity(), "language": language, "prompt": prompt}
        self.account: tuple[RateLimit, str] | None = \
            provider.account_limit() if isinstance(provider, SharedLimit) else None

    def plan(self, batch: pa.RecordBatch) -> Plan:
        if self.column not in batch.schema.names:
            raise ConfigError(f"transcribe: column {self.column!r} is not in the table (columns: "
                              f"{batch.schema.names})")
        names = batch.column(self.filename_column).to_pylist() if self.filename_column in batch.schema.names \
            else [None] * batch.num_rows
        keys: list[str | None] = []
        skips: list[Skip | None] = []
        payloads: dict[str, Any] = {}
        for audio, name in zip(batch.column(self.column).to_pylist(), names, strict=True):
            skip = _skip(audio, self.column, self.max_bytes)
            if skip is not None:
                keys.append(None)
                skips.append(skip)
                continue
            mime, extension = audio_type(audio)
            filename = PurePosixPath(str(name)).name if name else f"{self.column}{extension}"
            key = cache_key(self.identity, {"audio": hashlib.sha256(audio).hexdigest()})
            payloads[key] = self.provider.transcription_request(audio, filename, mime, self.language, self.prompt)
            keys.append(key)
            skips.append(None)
        return Plan(keys, skips, payloads)

    def jobs(self, keys: Sequence[str], payloads: Mapping[str, Any]) -> list[Job]:
        return [Job(k, payloads[k], TokenCost(len(payloads[k]["file"]) // 1024)) for k in keys]

    def columns(self, values: list[Any], errors: list[str | None], *, final: bool) -> dict[str, pa.Array]:
        return {self.output_column: pa.array(values, pa.string()),
                error_column(self.output_column): pa.array(errors, pa.string())}

    def connect(self) -> AbstractAsyncContextManager[Connection]:
        return self.provider.connect_transcriptions(self.options.concurrency, self.options.timeout_s)


def _skip(audio: Any, column: str, max_bytes: int) -> Skip | None:
    if audio is None:
        return Skip(SkipKind.NULL, column)
    if not isinstance(audio, bytes):
        raise ConfigError(f"transcribe: column {column!r} must hold audio bytes, got {type(audio).__name__}")
    if not audio:
        return Skip(SkipKind.EMPTY, column)
    if len(audio) > max_bytes:
        return Skip(SkipKind.TOO_LARGE, column, f"{len(audio):,} bytes, over max_bytes={max_bytes:,}")
    return None


def transcribe(table: Source, column: str = "bytes", *, provider: Transcriber, output_column: str = "transcript",
               language: str | None = None, prompt: str | None = None, filename_column: str | None = "path",
               max_bytes: int = MAX_AUDIO_BYTES, **run: Unpack[RunArgs]) -> Enriched | EnrichedStream:
    """The transcript of the audio bytes in ``column`` (string), with ``<output_column>_error``. ``language``
    (ISO-639-1, e.g. ``"de"``) and ``prompt`` (spelling of names, the previous segment) go to the model;
    ``model`` picks the transcription model (default: the provider's ``transcription_model``). A table gives a
    table back, a reader a stream (see ``prompt``); ``run`` as for every AI function (``RunArgs``)."""
    provider = with_model(provider, run.get("model"), "transcription")
    if not isinstance(provider, Transcriber):
        raise NotSupportedError(provider, "transcribe (it needs an /audio/transcriptions endpoint)")
    options = run.get("options") or RunOptions()
    task = TranscribeTask(column, provider, output_column, language, prompt, filename_column, max_bytes, options)
    # Transcription is priced by the minute, not by the chat model's tokens: cost only with ``prices`` given.
    return run_task(table, task, options, run, prices=run.get("prices"))
