"""What the orchestration costs: the Prefect flow against the same stage commands in a plain loop, and ``dvc repro``
with nothing to do.

    .venv/bin/python benchmarks/orchestration_cost.py [--profile ci] [--pairs 5] [--workdir runs/orchestration]
                                                      [--dvc-repo .] [--out benchmarks/results/orchestration.json]

Each pair runs the whole pipeline (MLflow off: the stages that need it are skipped by both) twice from empty working
directories, once as ``flows.pipeline.pipeline`` (Prefect, its ephemeral API server included) and once as a loop
over the very commands the flow would run (``flows.pipeline.stage_command``), alternating which goes first. Then
``dvc repro`` runs ``--pairs`` times in ``--dvc-repo`` (a checkout whose pipeline is up to date: nothing to do).
Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import spread  # benchmarks/common.py (these scripts run as files: benchmarks/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]

FLOW = """
import sys
from flows.pipeline import pipeline
pipeline(profile=sys.argv[1], params="params.yaml", workdir=".", mlflow=False)
"""

DIRECT = """
import subprocess, sys
from r2m.config import load_config
from flows.pipeline import stage_command
from tasks import stages
cfg = load_config("params.yaml", profile=sys.argv[1])
for stage in stages.STAGES:
    if stage.needs_mlflow:
        continue
    for run in cfg.run_names() if stage.matrix else [None]:
        subprocess.run(stage_command(stage.name, "params.yaml", sys.argv[1], [], ".", False, run), check=True)
"""


def timed(cmd: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def fresh(wd: Path) -> Path:
    shutil.rmtree(wd, ignore_errors=True)
    wd.mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", wd / "params.yaml")
    shutil.copytree(ROOT / "configs", wd / "configs")
    return wd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="ci")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--workdir", default="runs/orchestration")
    ap.add_argument("--dvc-repo", default=None, help="an up-to-date DVC checkout for the no-op `dvc repro` timing")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "orchestration.json"))
    a = ap.parse_args()
    dvc = str(Path(sys.executable).parent / "dvc")
    if a.dvc_repo and subprocess.run([dvc, "status", "-q"], cwd=a.dvc_repo, capture_output=True).returncode != 0:
        sys.exit(f"--dvc-repo {a.dvc_repo}: the pipeline is not up to date (`dvc status`): run `make repro` first")
    base = (ROOT / a.workdir).resolve()
    kinds = {"prefect": FLOW, "direct": DIRECT}
    seconds: dict[str, list[float]] = {k: [] for k in kinds}
    for i in range(a.pairs):
        for kind in list(kinds) if i % 2 == 0 else list(kinds)[::-1]:
            wd = fresh(base / kind)
            seconds[kind].append(timed([sys.executable, "-c", kinds[kind], a.profile], wd))
            print(f"pair {i + 1} {kind}: {seconds[kind][-1]:.1f} s", flush=True)
    ratios = [p / d for p, d in zip(seconds["prefect"], seconds["direct"], strict=True)]
    result: dict = {
        "profile": a.profile,
        "seconds": seconds,
        "prefect_vs_direct": spread(ratios),
        "prefect_minus_direct_s": spread([p - d for p, d in zip(seconds["prefect"], seconds["direct"], strict=True)]),
    }
    if a.dvc_repo:
        noop = [timed([dvc, "repro"], Path(a.dvc_repo).resolve()) for _ in range(a.pairs)]
        result["dvc_repro_noop_s"] = spread(noop)
    result["command"] = " ".join(["python benchmarks/orchestration_cost.py", *sys.argv[1:]])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    s = result["prefect_vs_direct"]
    print(f"Prefect / direct: median {s['median']:.3f} (min {s['min']:.3f}, max {s['max']:.3f}, {s['n']} pairs)")
    if "dvc_repro_noop_s" in result:
        print(f"dvc repro with nothing to do: median {result['dvc_repro_noop_s']['median']:.2f} s")
    print(f"written: {a.out}")


if __name__ == "__main__":
    main()
