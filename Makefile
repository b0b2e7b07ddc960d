# The two commands of the README: `make run` (set-up + the default experiment) and `make test` (set-up + tests).
# `make repro`: the same experiment through DVC (`dvc repro`, with the venv's python on PATH for the stage commands).
.PHONY: setup run run-smol run-smol-tldr repro results results-peers bench test lint dvc-yaml

setup:
	bash scripts/bootstrap.sh

run: setup
	.venv/bin/r2m run

run-smol: setup
	.venv/bin/r2m run --profile smol

# real data: the shipped TL;DR sample on SmolLM2, judged by SmolLM2 (its own working directory)
run-smol-tldr: setup
	.venv/bin/r2m run --profile smol-tldr --workdir runs/smol-tldr

repro: setup
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/dvc repro

# the README's method comparison: 5 seeds x GRPO, RLOO x vanilla, R2M, each stage its own process (docs/evidence.md)
results: setup
	.venv/bin/r2m results --seeds 0 1 2 3 4 --algos grpo rloo --methods vanilla r2m --out results

# the README's peers comparison: 5 seeds x GRPO x every method of the registry (r2m methods), same budget
PEERS = vanilla r2m kl early_stop par ensemble_mean ensemble_min ensemble_uwo warm length_penalty repetition_penalty
results-peers: setup
	.venv/bin/r2m results --seeds 0 1 2 3 4 --algos grpo --methods $(PEERS) --out results/peers
	.venv/bin/r2m compare --results results/peers --method r2m
	.venv/bin/r2m compare --results results/peers --method vanilla

# the benchmark suite (README "What R2M costs"): RL step costs on tiny, then the orchestration's; JSON in
# benchmarks/results/, tables printed. Nothing else should run on the machine meanwhile.
bench: setup
	.venv/bin/python benchmarks/rl_cost.py --algos grpo rloo --pairs 5 --steps 24
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/python benchmarks/orchestration_cost.py --pairs 5 --dvc-repo .

dvc-yaml: setup
	.venv/bin/r2m dvc-yaml

test: setup
	.venv/bin/ruff check r2m tasks flows tests benchmarks
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check r2m tasks flows tests benchmarks
