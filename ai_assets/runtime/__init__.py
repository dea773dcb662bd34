"""The request engine: concurrency, limits, retries, per-row errors, cache and usage."""
