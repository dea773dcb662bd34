.PHONY: setup test demo bench lint
setup:
	./scripts/setup
test:
	./scripts/test
demo:
	./scripts/demo
lint:
	.venv/bin/ruff check . && .venv/bin/mypy
bench:
	.venv/bin/python bench/bench_prompt.py && .venv/bin/python bench/bench_embed.py
