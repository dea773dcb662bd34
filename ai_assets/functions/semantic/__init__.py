"""Semantic operators over a partition's rows: filter, top-k and aggregate (one table), join and dedup (pairs of
rows, blocked by embedding similarity and verified by an LLM). Every model call goes through the journal, keyed by
the request's content, so a re-run and a new partition pay only for what is new."""
