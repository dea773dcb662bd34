"""``python -m ai_assets.testing --port 8000 --latency 0.1``: run the fake OpenAI-compatible server."""

from ai_assets.testing.server import main

main()
