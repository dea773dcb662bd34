"""``python -m ai_assets.runtime.cache LOCATION [--max-entries N] [--older-than-days D]``: report and prune."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ai_assets.runtime.cache import open_cache
from ai_assets.runtime.pg import redact


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ai_assets.runtime.cache",
                                     description="Inspect and prune an ai_assets journal")
    parser.add_argument("location", help="a SQLite file, an object-store URI or a postgresql+psycopg2:// URL")
    parser.add_argument("--max-entries", type=int, default=None, help="keep at most this many, newest first")
    parser.add_argument("--older-than-days", type=float, default=None, help="drop entries written before this")
    args = parser.parse_args(argv)
    cache = open_cache(args.location)
    try:
        before = len(cache)
        removed = cache.prune(max_entries=args.max_entries, older_than_s=None if args.older_than_days is None
                              else args.older_than_days * 86_400)
        print(f"{redact(args.location)}: {before} entries, {removed} removed, {len(cache)} kept")
    finally:
        cache.close()


if __name__ == "__main__":
    main()
