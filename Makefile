# The two commands of the README: `make run` (set-up + the default experiment) and `make test` (set-up + tests).
.PHONY: setup run run-smol test lint

setup:
	bash scripts/bootstrap.sh

run: setup
	.venv/bin/r2m run

run-smol: setup
	.venv/bin/r2m run --profile smol

test: setup
	.venv/bin/ruff check r2m tasks flows tests benchmarks
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check r2m tasks flows tests benchmarks
