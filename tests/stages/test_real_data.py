"""A real dataset through the pipeline's stages: the shipped TL;DR samples (r2m/data/samples) on the tiny policy,
judged by an OpenAI-format server (a real HTTP server here), and the one-line errors of a bad source."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from r2m.config import load_config
from r2m.data.io import PAIR_SCHEMA, PROMPT_SCHEMA, SFT_SCHEMA, read_jsonl
from r2m.judges.gold import load_gold
from r2m.paths import Paths
from tasks.common import run_stage
from tests.conftest import REPO, make_workdir
from tests.helpers.fake_openai import fake_openai_server

SIZES = {"n_sft": 40, "n_rl_prompts": 4, "n_eval_prompts": 4, "n_rm_train": 24, "n_rm_heldout": 8, "n_rm_test": 8}
REAL = [
    "data.source=tldr",
    "data.path=sample:tldr_sft.jsonl",
    "data.pairs_source=summarize_from_feedback",
    "data.pairs_path=sample:tldr_comparisons.jsonl",
    "judge.kind=openai",
    *(f"data.{k}={v}" for k, v in SIZES.items()),
    "rl.methods=[vanilla, r2m]",
    "rl.algos=[grpo]",
    "rl.steps=2",
    "rl.rounds=1",
    "evaluate.n_policy_pairs=2",
]


def _cfg(wd: Path, *extra: str):
    return load_config(wd / "params.yaml", profile="ci", overrides=[*REAL, *extra])


@pytest.fixture(scope="module")
def real_pipeline(tmp_path_factory) -> tuple[Path, object, int]:
    """Every stage up to the report on the shipped samples; the judge prefers the first response it is shown."""
    wd = make_workdir(tmp_path_factory.mktemp("real"))
    with fake_openai_server() as server:
        server.responder = lambda body: (200, "Comparison: the first is better.\nPreferred: A", "stop", {})
        cfg = _cfg(wd, f"judge.base_url={server.base_url}")
        for stage in ("prepare", "sft", "preferences", "reward_model", "best_of_n"):
            run_stage(stage, cfg, wd, mlflow=False)
        for run in cfg.run_names():
            run_stage("rl", cfg, wd, mlflow=False, run=run, progress=False)
            run_stage("evaluate", cfg, wd, mlflow=False, run=run)
        run_stage("report", cfg, wd, mlflow=False)
        requests = len(server.requests)
    return wd, cfg, requests


def test_prepare_writes_the_same_files_from_a_real_source(real_pipeline):
    wd, cfg, _ = real_pipeline
    data = wd / "data"
    sft = read_jsonl(data / "sft.jsonl", SFT_SCHEMA)
    rl, ev = (read_jsonl(data / f"{n}.jsonl", PROMPT_SCHEMA) for n in ("rl_prompts", "eval_prompts"))
    assert (len(sft), len(rl), len(ev)) == (SIZES["n_sft"], SIZES["n_rl_prompts"], SIZES["n_eval_prompts"])
    assert all(r["prompt"].startswith("SUBREDDIT: r/") and r["prompt"].endswith("\n\nTL;DR:") for r in sft + rl + ev)
    assert all(r["completion"].startswith(" ") for r in sft) and all(
        r["reference"] == r["reference"].strip() for r in rl
    )
    prompts = [{r["prompt"] for r in rows} for rows in (sft, rl, ev)]
    pairs = {s: read_jsonl(data / f"{s}.jsonl", PAIR_SCHEMA) for s in ("rm_train", "rm_heldout", "rm_test")}
    prompts += [{p["prompt"] for p in v} for v in pairs.values()]
    assert all(not (a & b) for i, a in enumerate(prompts) for b in prompts[i + 1 :])  # disjoint by prompt
    assert [len(v) for v in pairs.values()] == [SIZES["n_rm_train"], SIZES["n_rm_heldout"], SIZES["n_rm_test"]]
    # the comparisons' prompts are in the policy's TL;DR layout (double newlines), their ids name the source
    assert all("\n\nTITLE: " in p["prompt"] and p["id"].startswith("sff-") for p in pairs["rm_train"])
    assert load_gold(Paths.of(cfg, wd)) == (None, None)  # a real dataset has no gold judge
    meta = json.loads((wd / "metrics" / "prepare.json").read_text())
    assert meta["source"]["kind"] == "tldr" and meta["source"]["pairs_kind"] == "summarize_from_feedback"
    assert meta["pairs_dropped_overlap"] == 0 and meta["source_prompts"] == 300


def test_prepare_is_deterministic(real_pipeline, tmp_path):
    wd, cfg, _ = real_pipeline
    again = make_workdir(tmp_path / "again")
    run_stage("prepare", cfg, again, mlflow=False)
    for name in ("posts", "sft", "rm_prompts", "rl_prompts", "eval_prompts"):
        assert (wd / "data" / f"{name}.jsonl").read_bytes() == (again / "data" / f"{name}.jsonl").read_bytes(), name


def test_real_pairs_keep_their_human_labels(real_pipeline):
    wd, _, _ = real_pipeline
    rows = {
        json.loads(line)["info"]["id"]: json.loads(line)
        for line in (REPO / "r2m/data/samples/tldr_comparisons.jsonl").open()
    }
    texts = {
        (" " + r["summaries"][r["choice"]]["text"].strip(), " " + r["summaries"][1 - r["choice"]]["text"].strip())
        for r in rows.values()
    }
    pairs = read_jsonl(wd / "data" / "rm_test.jsonl", PAIR_SCHEMA)
    assert all((p["chosen"], p["rejected"]) in texts for p in pairs)  # chosen = the labellers' choice
    m = json.loads((wd / "metrics" / "preferences.json").read_text())
    assert m["labels"] == "dataset" and m["rm_train"]["n"] == SIZES["n_rm_train"]


def test_evaluation_is_judged_by_the_configured_judge(real_pipeline):
    wd, cfg, requests = real_pipeline
    for run in cfg.run_names():
        ev = json.loads((wd / "metrics" / "eval" / f"{run}.json").read_text())
        assert ev["judge"] == "openai-gpt-4o-mini"
        # the judge always prefers the response shown first: both orders -> a tie on every prompt
        assert ev["vs_reference"]["ties"] == ev["vs_reference"]["n"] == SIZES["n_eval_prompts"]
        assert "policy_gold_mean" not in ev and "oracle" not in ev["checkpoints"]
        assert 0.0 <= ev["rm_test"]["accuracy"] <= 1.0 and ev["rm_test"]["n"] == SIZES["n_rm_test"]
        gens = read_jsonl(wd / "metrics" / "eval" / f"{run}_generations.jsonl")
        assert len(gens) == SIZES["n_eval_prompts"] and all("post_id" not in g for g in gens)
    assert requests >= 2 * 2 * SIZES["n_eval_prompts"]  # (vs ref, vs SFT) x both orders; repeats come from the cache
    summary = (wd / "metrics" / "summary.md").read_text()
    assert "No gold judge" in summary and "judge openai-gpt-4o-mini, both orders" in summary
    bon = json.loads((wd / "metrics" / "best_of_n.json").read_text())
    assert bon["gold_from"].startswith("rm_heldout")


def _stage(wd: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tasks", "prepare", "--params", str(wd / "params.yaml"), "--profile", "ci"]
    return subprocess.run([*cmd, "--workdir", str(wd), "--no-mlflow", *args], capture_output=True, text=True, cwd=REPO)


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.glob("*.jsonl"))}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"a": 1, "b": 2}\n', "row 1: not a known dataset format (fields: a, b)"),
        (
            '{"prompt": "p", "chosen": "x", "rejected": "y"}\n',
            "looks like 'preference' rows (prompt, chosen, rejected); set data.source=preference",
        ),
        (b'{"prompt": "SUBREDDIT: r/a\\n\\nTL;DR:", "completion": " \xff"}\n', "row 1: field '<row>': invalid UTF-8"),
    ],
)
def test_a_bad_source_is_one_line_and_leaves_data_as_it_was(real_pipeline, tmp_path, content, message):
    wd, _, _ = real_pipeline
    before = _digest(wd / "data")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    keys = [REAL[0], f"data.path={bad}", *REAL[2:4], *(f"data.{k}={v}" for k, v in SIZES.items())]
    sets = [a for x in keys for a in ("--set", x)]
    res = _stage(wd, *sets, "--set", "judge.kind=openai")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: prepare: ") and message in lines[0], res.stderr
    assert str(bad) in lines[0]
    assert _digest(wd / "data") == before
