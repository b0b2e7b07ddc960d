#!/usr/bin/env bash
# The method comparison behind the README's R2M table: for each seed, the shared stages once, then every
# (algo, method) RL run in its own process (so peak memory per run is not confounded), evaluation and the report.
#   bash benchmarks/run_matrix.sh "0 1" "grpo rloo" "vanilla r2m" [extra --set args...]
# Writes runs/seed<k>/ (data, models, metrics, plots), then prints the table of benchmarks/seeds_table.py.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-"0 1"}; ALGOS=${2:-"grpo rloo"}; METHODS=${3:-"vanilla r2m"}; shift 3 || true
R2M=.venv/bin/r2m
dirs=()
for seed in $SEEDS; do
  wd=runs/seed$seed; dirs+=("$wd")
  mkdir -p "$wd"
  algos_yaml="[$(echo $ALGOS | sed 's/ /, /g')]"; methods_yaml="[$(echo $METHODS | sed 's/ /, /g')]"
  common=(--workdir "$wd" --set seed=$seed --set "rl.algos=$algos_yaml" --set "rl.methods=$methods_yaml" --no-mlflow "$@")
  for stage in prepare sft reward_model; do /usr/bin/time -f "$stage seed=$seed %e s" $R2M stage $stage "${common[@]}"; done
  for algo in $ALGOS; do
    for method in $METHODS; do
      /usr/bin/time -f "rl $algo-$method seed=$seed %e s" $R2M stage rl --algo $algo --method $method "${common[@]}"
      $R2M stage evaluate --algo $algo --method $method "${common[@]}"
    done
  done
  $R2M stage report "${common[@]}"
done
.venv/bin/python benchmarks/seeds_table.py "${dirs[@]}"
