"""What the benchmark scripts share: a stage in a process of its own, and the spread of repeated measurements."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stage(wd: Path, args: list[str], env_extra: dict[str, str] | None = None) -> float:
    """``python -m tasks <args> --no-mlflow`` in ``wd`` (output discarded); returns its wall seconds."""
    env = {**os.environ, **(env_extra or {}), "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tasks", *args, "--no-mlflow"],
        cwd=wd,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def spread(values: list[float]) -> dict:
    """Median, min, max and count of repeated measurements (or of per-pair ratios)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}
