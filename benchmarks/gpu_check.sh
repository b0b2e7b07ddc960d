#!/usr/bin/env bash
# The GPU checks in one short command (run from the repository root on a machine with CUDA and the venv built):
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. the tests that need CUDA (they skip elsewhere); 2. tiny and smol RL runs, vanilla and r2m, GRPO, on the GPU
# (8 and 4 steps); 3. the RL cost benchmark on tiny (3 rounds, 10 steps) and smol (3 rounds, 6 steps).
# Everything it prints goes to OUT_DIR/gpu_check.log too.
set -euo pipefail
OUT=${1:-runs/gpu_check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
ROOT=$(pwd)
PY="$ROOT/.venv/bin/python"
nvidia-smi --query-gpu=name,memory.total --format=csv
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
$PY -m pytest -q -rs tests/unit/test_r2m_rl.py -k cuda
for profile in tiny smol; do
  WD="$OUT/wd-$profile"
  steps=$([ "$profile" = tiny ] && echo 8 || echo 4)
  mkdir -p "$WD"
  cp params.yaml "$WD/" && cp -r configs "$WD/"
  for s in prepare sft preferences reward_model; do
    (cd "$WD" && PYTHONPATH="$ROOT" "$PY" -m tasks "$s" --profile "$profile" --no-mlflow)
  done
  for m in vanilla r2m; do
    (cd "$WD" && PYTHONPATH="$ROOT" "$PY" -m tasks rl --profile "$profile" --algo grpo --method "$m" \
      --set rl.steps=$steps --set rl.rounds=2 --no-mlflow)
    cat "$WD/metrics/rl/grpo-$m.json"
  done
done
$PY benchmarks/rl_cost.py --profile tiny --algos grpo --pairs 3 --steps 10 --workdir "$OUT/bench" --out "$OUT/rl_cost_tiny_gpu.json"
$PY benchmarks/rl_cost.py --profile smol --algos grpo --pairs 3 --steps 6 --workdir "$OUT/bench" --out "$OUT/rl_cost_smol_gpu.json"
