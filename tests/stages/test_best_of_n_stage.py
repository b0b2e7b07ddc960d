"""Smoke test of the best_of_n stage on the `ci` profile (n_max 4, 4 prompts): real sampling, real RMs, gold."""

from __future__ import annotations

import csv
import json
import math
import shutil

import pytest

from tasks.common import run_stage


@pytest.fixture
def workdir(tiny_pipeline, tmp_path):
    """A private copy of the shared pipeline (the stage writes metrics/ and plots/ under it)."""
    wd = tmp_path / "wd"
    shutil.copytree(tiny_pipeline, wd)
    if not (wd / "models" / "rm_heldout").exists():  # pipelines from before the held-out RM
        shutil.copytree(wd / "models" / "rm", wd / "models" / "rm_heldout")
    return wd


def test_best_of_n_stage_writes_the_curve_reproducibly(workdir, ci_cfg):
    out = run_stage("best_of_n", ci_cfg, workdir, mlflow=False, progress=False)
    json_file, csv_file = workdir / "metrics" / "best_of_n.json", workdir / "metrics" / "best_of_n.csv"
    png = workdir / "plots" / "best_of_n.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    m = json.loads(json_file.read_text())
    assert m == out["metrics"]
    n_max = ci_cfg.best_of_n.n_max
    curve = m["curve"]
    assert [r["n"] for r in curve] == [2**k for k in range(int(math.log2(n_max)) + 1)]
    assert all(b["kl"] > a["kl"] for a, b in zip(curve, curve[1:], strict=False)) and curve[0]["kl"] == 0.0
    assert all(math.isfinite(r[k]) for r in curve for k in ("gold", "proxy", "heldout", "gold_se"))
    assert m["n_prompts"] == ci_cfg.best_of_n.n_prompts and m["n_samples"] == n_max
    assert m["gold_n1"] == curve[0]["gold"] and m["gold_at_n_max"] == curve[-1]["gold"]
    assert m["oracle_gold"] >= max(r["gold"] for r in curve)
    assert curve[-1]["proxy"] >= curve[0]["proxy"]  # the proxy's pick scores at least the mean under the proxy
    assert m["verdict"].startswith("gold rises" if m["gold_rises"] else "gold does not rise")
    with csv_file.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["n", "kl", "sqrt_kl", "gold", "proxy", "heldout"] and len(rows) == len(curve)
    assert [float(r["gold"]) for r in rows] == [r["gold"] for r in curve]
    assert out["timings"]["samples"] == n_max * m["n_prompts"]

    first = json_file.read_bytes(), csv_file.read_bytes()
    run_stage("best_of_n", ci_cfg, workdir, mlflow=False, progress=False)
    assert (json_file.read_bytes(), csv_file.read_bytes()) == first


def test_best_of_n_without_gold_takes_the_heldout_rm_as_truth(workdir, ci_cfg):
    posts = workdir / "data" / "posts.jsonl"  # a real dataset's posts name their source: no gold judge
    rows = [json.loads(line) for line in posts.read_text().splitlines()]
    posts.write_text("".join(json.dumps({"id": r["id"], "source": "preference"}) + "\n" for r in rows))
    run_stage("best_of_n", ci_cfg, workdir, mlflow=False, progress=False)
    m = json.loads((workdir / "metrics" / "best_of_n.json").read_text())
    assert m["gold_from"].startswith("rm_heldout")
    assert all(c["gold"] == c["heldout"] for c in m["curve"])  # the held-out RM's curve stands in for gold
