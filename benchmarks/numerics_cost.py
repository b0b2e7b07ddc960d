"""What the pinned CPU numerics cost: the RL stage with the pins (ATen AVX2 kernels, MKL CNR AVX2 branch, oneDNN
capped at AVX2) against the CPU's own kernels, interleaved A/B pairs, median ratio with its spread.

    .venv/bin/python benchmarks/numerics_cost.py [--pairs 5] [--steps 16] [--method r2m] [--workdir runs/numerics]

The shared stages (prepare, sft, reward_model; `ci` profile data and models) run once; then each pair runs the RL
stage (tiny-profile per-step budget: 8 prompts x 4 generations, 48 tokens) once pinned and once native, alternating
which goes first. Two figures per run: the whole process (start-up included) and the RL stage's own mean seconds per
step (from ``timings/rl-<run>.json``). Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from common import stage  # benchmarks/common.py (these scripts run as files: benchmarks/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
NATIVE = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "ALL"}  # ATen caps at the CPU
PINNED: dict[str, str] = {}  # r2m.env's defaults


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--method", default="r2m")
    ap.add_argument("--workdir", default="runs/numerics")
    a = ap.parse_args()
    wd = (ROOT / a.workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "params.yaml", wd / "params.yaml")
    shutil.copytree(ROOT / "configs", wd / "configs", dirs_exist_ok=True)
    common = ["--profile", "ci"]
    for s in ("prepare", "sft", "reward_model"):
        stage(wd, [s, *common], PINNED)
    rl = ["rl", "--algo", "grpo", "--method", a.method, *common]
    for o in (
        f"rl.steps={a.steps}",
        "rl.rounds=1",
        "rl.prompts_per_step=8",
        "rl.num_generations=4",
        "rl.max_completion_length=48",
    ):
        rl += ["--set", o]
    run = f"grpo-{a.method}"
    results: dict[str, list[tuple[float, float]]] = {"pinned": [], "native": []}
    for i in range(a.pairs):
        order = [("pinned", PINNED), ("native", NATIVE)]
        for name, env in order if i % 2 == 0 else order[::-1]:
            shutil.rmtree(wd / "models" / "rl" / run, ignore_errors=True)
            wall = stage(wd, rl, env)
            t = json.loads((wd / "timings" / f"rl-{run}.json").read_text())
            results[name].append((wall, t["seconds_per_step"]))
            print(
                f"pair {i + 1} {name}: {wall:.1f} s process, {t['seconds_per_step']:.3f} s/step "
                f"({t['numerics']['cpu_capability']}, MKL_CBWR={t['numerics']['MKL_CBWR'] or '-'})",
                flush=True,
            )
    for k, label in ((0, "process seconds"), (1, "seconds per RL step")):
        ratios = [p[k] / n[k] for p, n in zip(results["pinned"], results["native"], strict=True)]
        print(
            f"pinned / native {label}: median {statistics.median(ratios):.3f} "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {len(ratios)} pairs)"
        )


if __name__ == "__main__":
    main()
