"""The soak check of benchmarks/soak.py with 3 runs: the same `ci` pipeline three times in one work directory adds
no MLflow run, no registered version and no bytes after the first (20 runs: `python -m benchmarks.soak`)."""

from __future__ import annotations

import pytest

from benchmarks.soak import soak
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_three_identical_runs_converge(tmp_path):
    out = soak(3, "ci", tmp_path / "wd", params=str(REPO / "params.yaml"))
    first = out["history"][0]
    assert first["runs"] > 0 and first["versions"] >= 1
    assert first.get("runs_running", 0) == 0 and first.get("runs_failed", 0) == 0
    assert out["grew"] == [], out["history"]
