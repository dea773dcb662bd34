"""The Postgres journal against a real PostgreSQL: concurrent writers from several processes, a dropped
connection, the prune command (which never prints a password)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ai_assets.runtime.cache import Entry, open_cache
from ai_assets.runtime.cache.postgres import PostgresCache
from ai_assets.runtime.pg import connect, redact

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import sys
from ai_assets.runtime.cache import Entry, open_cache
url, worker = sys.argv[1], int(sys.argv[2])
cache = open_cache(url)
for start in range(0, 400, 25):
    # Workers overlap on every key; even workers answer, odd workers record failures.
    cache.put_many([Entry(f"k{i}", {"by": worker} if worker % 2 == 0 else None,
                          None if worker % 2 == 0 else f"failed in {worker}", f"run{worker}", 3, 2)
                    for i in range(start, start + 25)])
cache.close()
"""


def test_concurrent_writers_from_four_processes_never_lose_an_answer(pg_url: str) -> None:
    workers = [subprocess.Popen([sys.executable, "-c", WRITER, pg_url, str(w)], cwd=ROOT) for w in range(4)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0, 0, 0]
    cache = open_cache(pg_url)
    assert isinstance(cache, PostgresCache)
    try:
        assert len(cache) == 400
        found = cache.get_many([f"k{i}" for i in range(400)], include_errors=True)
        # A failure never replaces an answer, whichever process wrote last.
        assert all(r.error is None and r.value["by"] in (0, 2) for r in found.values())
        assert {r.tokens_in for r in found.values()} == {3}
    finally:
        cache.close()


def test_a_dropped_connection_is_opened_again(pg_url: str) -> None:
    cache = open_cache(pg_url)
    try:
        cache.put_many([Entry("before", 1)])
        admin = connect(pg_url)
        with admin.cursor() as cursor:  # what a server restart or an idle timeout does to the journal's session
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        admin.close()
        cache.put_many([Entry("after", 2)])
        assert {k: r.value for k, r in cache.get_many(["before", "after"]).items()} == {"before": 1, "after": 2}
    finally:
        cache.close()


def test_prune_command_keeps_the_newest_and_hides_the_password(pg_url: str) -> None:
    secret_url = pg_url.replace("postgres@", "postgres:hunter2-secret@")  # trust auth ignores the password
    cache = open_cache(secret_url)
    for i in range(30):
        cache.put_many([Entry(f"k{i}", i)])
    cache.close()
    done = subprocess.run([sys.executable, "-m", "ai_assets.runtime.cache", secret_url, "--max-entries", "10"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    assert "hunter2" not in done.stdout + done.stderr
    assert "30 entries, 20 removed, 10 kept" in done.stdout
    assert redact(secret_url) in done.stdout
    kept = open_cache(pg_url)
    try:
        assert sorted(kept.get_many([f"k{i}" for i in range(30)])) == sorted(f"k{i}" for i in range(20, 30))
    finally:
        kept.close()
