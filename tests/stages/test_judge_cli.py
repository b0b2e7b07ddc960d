"""`r2m judge` on a pipeline's outputs: gold judge results match the gold scorer, bad sources fail clearly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from r2m.cli import main
from r2m.data.io import read_jsonl
from tasks.common import Paths, load_gold
from tests.conftest import make_workdir


def judge_workdir(tiny_pipeline: Path, tmp_path: Path) -> Path:
    """A fresh working directory that shares the tiny pipeline's data and models (read-only use)."""
    wd = make_workdir(tmp_path / "wd")
    for name in ("data", "models"):
        os.symlink(tiny_pipeline / name, wd / name)
    return wd


def cli(wd: Path, *args: str):
    base = ["--workdir", str(wd), "--params", str(wd / "params.yaml"), "--profile", "ci"]
    return CliRunner().invoke(main, [*args, *base], catch_exceptions=False)


def test_judge_gold_counts_match_the_gold_scorer(tiny_pipeline, ci_cfg, tmp_path):
    wd = judge_workdir(tiny_pipeline, tmp_path)
    res = cli(wd, "judge", "--a", "sft", "--b", "reference", "--judge", "gold", "--no-mlflow")
    assert res.exit_code == 0, res.output
    out = json.loads((wd / "reports" / "gold" / "sft_vs_reference.json").read_text())
    rep = out["report"]
    rows = read_jsonl(wd / "data" / "eval_prompts.jsonl")
    sft = {g["id"]: g["completion"] for g in read_jsonl(wd / "models" / "sft" / "eval_generations.jsonl")}
    _, gold = load_gold(Paths.of(ci_cfg, wd))
    ids = [r["post_id"] for r in rows]
    g_sft = gold(ids, [sft[r["id"]] for r in rows])
    g_ref = gold(ids, [" " + r["reference"] for r in rows])
    assert rep["n"] == len(rows) == 12
    assert rep["wins"] == sum(a > b for a, b in zip(g_sft, g_ref, strict=True))
    assert rep["losses"] == sum(a < b for a, b in zip(g_sft, g_ref, strict=True))
    assert rep["position_consistency"] == 1.0  # a deterministic judge never depends on the order
    verdicts = read_jsonl(wd / "reports" / "gold" / "sft_vs_reference_verdicts.jsonl")
    assert len(verdicts) == 12 and all("[AB]" in v["raw"] and "[BA]" in v["raw"] for v in verdicts)
    assert "| sft | reference | 12 |" in res.output


def test_judge_max_items_and_jsonl_source(tiny_pipeline, tmp_path):
    wd = judge_workdir(tiny_pipeline, tmp_path)
    rows = read_jsonl(wd / "data" / "eval_prompts.jsonl")
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps({"id": r["id"], "completion": " " + r["reference"]}) + "\n" for r in rows))
    res = cli(wd, "judge", "--a", str(mine), "--b", "reference", "--judge", "gold", "--max-items", "5", "--no-mlflow")
    assert res.exit_code == 0, res.output
    rep = json.loads((wd / "reports" / "gold" / "mine_vs_reference.json").read_text())["report"]
    assert rep["n"] == 5 and rep["ties"] == 5 and rep["win_rate_ties_half"] == 0.5  # identical texts tie


def test_judge_rejects_bad_sources(tiny_pipeline, tmp_path):
    from r2m.data.io import DataValidationError

    wd = judge_workdir(tiny_pipeline, tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "nope", "completion": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: no completion for 12 eval prompt id"):
        cli(wd, "judge", "--a", str(bad), "--b", "reference", "--judge", "gold", "--no-mlflow")
    bad.write_text(json.dumps({"id": "nope"}) + "\n")
    with pytest.raises(DataValidationError, match=r"bad.jsonl: row 1: field 'completion'"):
        cli(wd, "judge", "--a", str(bad), "--b", "reference", "--judge", "gold", "--no-mlflow")
    with pytest.raises(FileNotFoundError, match=r"no generations for 'rloo-r2m'"):
        cli(wd, "judge", "--a", "rloo-r2m", "--b", "reference", "--judge", "gold", "--no-mlflow")
    assert not (wd / "reports" / "gold" / "bad_vs_reference.json").exists()
