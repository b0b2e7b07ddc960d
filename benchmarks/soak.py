"""Soak: the same pipeline run N times in one work directory must converge. After the first run, every further run
of the same configuration adds no MLflow run, no registered version and no bytes on disk beyond what it rewrote in
place (the Prefect cache hits, DVC-style content keys). Prints one line per run and a JSON summary; exits 1 on the
first run that grows anything.

    python -m benchmarks.soak --runs 20 --profile ci --workdir /tmp/soak    # the long check (outside the tests)

``tests/flows/test_soak.py`` runs the same check with 3 runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# files that legitimately change size from run to run: timings (wall clock) and the stores that log them
VOLATILE = ("timings/", "mlflow.db", ".r2m.lock", "judge_cache.sqlite")


def disk_bytes(workdir: Path) -> int:
    """Bytes under ``workdir``, without the :data:`VOLATILE` files."""
    total = 0
    for p in workdir.rglob("*"):
        rel = p.relative_to(workdir).as_posix()
        if p.is_file() and not any(rel == v or rel.startswith(v) for v in VOLATILE):
            total += p.stat().st_size
    return total


def mlflow_counts(workdir: Path, uri: str) -> dict[str, int]:
    """Runs (by status) and registered model versions in the work directory's MLflow store."""
    from mlflow.tracking import MlflowClient

    cwd = os.getcwd()
    os.chdir(workdir)  # the tracking URI is relative to the work directory
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id], max_results=5000)]
        versions = sum(
            len(client.search_model_versions(f"name = '{m.name}'")) for m in client.search_registered_models()
        )
    finally:
        os.chdir(cwd)
    out = {"runs": len(runs), "versions": versions}
    for r in runs:
        out[f"runs_{r.info.status.lower()}"] = out.get(f"runs_{r.info.status.lower()}", 0) + 1
    return out


def soak(runs: int, profile: str, workdir: Path, params: str = "params.yaml") -> dict:
    """Run ``r2m run`` ``runs`` times; returns the per-run counts and whether anything grew after the first."""
    workdir.mkdir(parents=True, exist_ok=True)
    history = []
    for i in range(1, runs + 1):
        t0 = time.perf_counter()
        cmd = [str(Path(sys.executable).with_name("r2m")), "run", "--profile", profile, "--params", params]
        done = subprocess.run([*cmd, "--workdir", str(workdir)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"run {i} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        counts = {"run": i, "seconds": round(time.perf_counter() - t0, 1), "disk_bytes": disk_bytes(workdir)}
        counts.update(mlflow_counts(workdir, "sqlite:///mlflow.db"))
        history.append(counts)
        print(json.dumps(counts), flush=True)
    first = history[0]
    grew = [
        {"run": h["run"], **{k: (first[k], h[k]) for k in ("runs", "versions", "disk_bytes") if h[k] != first[k]}}
        for h in history[1:]
        if any(h[k] != first[k] for k in ("runs", "versions", "disk_bytes"))
    ]
    return {"history": history, "grew": grew, "ok": not grew and first.get("runs_running", 0) == 0}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--profile", default="ci")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--workdir", type=Path, required=True)
    a = ap.parse_args(argv)
    out = soak(a.runs, a.profile, a.workdir, a.params)
    print(json.dumps({k: out[k] for k in ("grew", "ok")}))
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
