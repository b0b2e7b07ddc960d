"""`r2m judge` on a pipeline's outputs: gold judge results match the gold scorer, bad sources fail clearly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from flows.cli import main
from r2m.data.io import read_jsonl
from r2m.judges.gold import load_gold
from r2m.paths import Paths
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
    wd = judge_workdir(tiny_pipeline, tmp_path)
    bad = tmp_path / "bad.jsonl"
    # bad sources are the user's to fix: one line naming the file (and row and field), exit status 2, no traceback
    for rows, source, msg in (
        ('{"id": "nope", "completion": "x"}', str(bad), "bad.jsonl: no completion for 12 eval prompt id"),
        ('{"id": "nope"}', str(bad), "bad.jsonl: row 1: field 'completion'"),
        (None, "rloo-r2m", "no generations for 'rloo-r2m'"),
        (None, "grpo-r2m@round_9", "round_9/policy: no such checkpoint"),
    ):
        if rows:
            bad.write_text(rows + "\n")
        res = cli(wd, "judge", "--a", source, "--b", "reference", "--judge", "gold", "--no-mlflow")
        assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.output
        assert res.stderr.startswith("error: judge: ") and msg in res.stderr, res.stderr
    assert not (wd / "reports" / "gold" / "bad_vs_reference.json").exists()


def _prefer_shorter(body: dict) -> tuple[int, str]:
    """A judge that prefers the shorter summary (parsed from the rendered TL;DR prompt)."""
    user = body["messages"][-1]["content"]
    a = user.split("Summary A:\n", 1)[1].split("\n\nSummary B:", 1)[0]
    b = user.split("Summary B:\n", 1)[1].split("\n\nFIRST", 1)[0]
    return 200, f"Comparison: the shorter one is more concise.\nPreferred: {'A' if len(a) <= len(b) else 'B'}"


def test_judge_openai_cli_tracks_in_mlflow_caches_and_never_leaks_the_key(tiny_pipeline, tmp_path, monkeypatch):
    from tests.helpers.fake_openai import fake_openai_server

    secret = "sk-test-SECRET-0123456789abcdef"
    monkeypatch.setenv("R2M_TEST_JUDGE_KEY", secret)
    wd = judge_workdir(tiny_pipeline, tmp_path)
    with fake_openai_server() as server:

        def echoing(request_json):  # a debugging proxy that echoes the request's headers into every reply
            status, text = _prefer_shorter(request_json)
            return status, text.replace("Comparison:", f"Comparison: (sent {server.requests[-1].headers})")

        server.responder = echoing
        args = ["judge", "--a", "sft", "--b", "reference", "--judge", "openai", "--model", "judge-model"]
        args += ["--base-url", server.base_url, "--set", "judge.api_key_env=R2M_TEST_JUDGE_KEY"]
        args += ["--set", "judge.usd_per_1m_prompt_tokens=2.5", "--max-items", "6"]
        first = cli(wd, *args)
        assert first.exit_code == 0, first.output
        assert len(server.requests) == 12  # 6 prompts x both orders
        assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {secret}"}
        bodies = [r.json for r in server.requests]
        assert all(b["model"] == "judge-model" for b in bodies)
        assert sum("Summary A:" in b["messages"][-1]["content"] for b in bodies) == 12
        second = cli(wd, *args)  # a rerun is served from the verdict cache: no request, same result
        assert second.exit_code == 0 and len(server.requests) == 12
    out = json.loads((wd / "reports" / "openai-judge-model" / "sft_vs_reference.json").read_text())
    rows = read_jsonl(wd / "data" / "eval_prompts.jsonl")[:6]
    sft = {g["id"]: g["completion"] for g in read_jsonl(wd / "models" / "sft" / "eval_generations.jsonl")}
    shorter = sum(len(sft[r["id"]].strip()) < len(r["reference"]) for r in rows)
    assert out["report"]["wins"] == shorter and out["report"]["invalid"] == 0
    assert out["usage"]["cache_hits"] == 12 and out["usage"]["requests"] == 0
    assert "gold_agreement" in out["report"]  # an LLM judge is checked against gold on the same items
    for text in (first.output, second.output):
        assert secret not in text
    leaked = [p for p in wd.rglob("*") if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes()]
    assert not leaked, leaked  # mlflow.db, mlartifacts/, reports/, judge_cache.sqlite
    files = [p for p in wd.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(b"Bearer ***" in p.read_bytes() for p in files)  # the echo was stored, scrubbed
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{wd / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["r2m"], output_format="list")
    run = next(r for r in runs if r.info.run_name == "judge-sft_vs_reference")
    assert run.data.params["judge.model"] == "judge-model"
    assert run.data.params["judge.template"] == "tldr"
    assert run.data.metrics["wins"] == shorter
    assert secret not in json.dumps(run.data.params) + json.dumps(run.data.tags)


@pytest.mark.parametrize(
    ("overrides", "label"),
    [
        ([], "gold"),
        (["judge.kind=local"], "local-smollm2"),
        (["judge.kind=local", "judge.local_answer=direct"], "local-smollm2-direct"),
        (["judge.kind=openai", "judge.template=alpaca_eval"], "openai-gpt-4o-mini-alpaca_eval"),
        (["judge.kind=openai", "judge.model=meta-llama/Llama-3.1-8B-Instruct"], "openai-Llama-3.1-8B-Instruct"),
    ],
)
def test_reports_of_different_judges_go_to_different_directories(repo, overrides, label):
    from r2m.config import load_config
    from r2m.judges.factory import judge_label

    assert judge_label(load_config(repo / "params.yaml", overrides=overrides)) == label
