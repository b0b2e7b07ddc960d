"""Empirical TPO end to end on the `ci` pipeline's SFT policy: two iterations of collection + DPO for TPO and plain
online DPO, deterministic by seed, resumable per iteration, within the annotation budget, and compared with the
gold judge on held-out prompts."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from r2m.config import load_config
from r2m.data.io import read_jsonl
from r2m.data.rows import gold_key
from r2m.judges.gold import gold_judge, load_gold
from r2m.paths import Paths
from r2m.transfer.collect import BudgetExhausted
from r2m.transfer.evaluate import greedy_completions, plot_selection, win_rates
from r2m.transfer.run import run_variant
from r2m.transfer.sources import build_source, parse_sources
from tests.conftest import REPO

pytestmark = pytest.mark.slow
SMALL = [
    "transfer.sources=[rouge_l, embedding, reward_model, lm=logprob@models/sft]",
    "transfer.iterations=2",
    "transfer.prompts_per_iteration=8",
    "transfer.k=4",
    "transfer.n_extra=8",
    "transfer.replace=2",
    "transfer.refresh_every=4",
    "transfer.max_new_tokens=12",
    "transfer.batch_size=4",
]


def hashes(d):
    return {
        p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def run(wd, variant, out, overrides=()):
    cfg = load_config(REPO / "params.yaml", profile="ci", overrides=[*SMALL, *overrides])
    paths = Paths.of(cfg, wd)
    sources = {s.name: build_source(s, wd) for s in parse_sources(cfg.transfer.sources)}
    _, gold_fn = load_gold(paths)
    human = lambda row, texts: gold_fn([gold_key(row)] * len(texts), texts)  # noqa: E731
    rows = read_jsonl(paths.data / "rl_prompts.jsonl")
    return cfg, run_variant(variant, paths.sft, out, rows, sources, human, cfg.transfer, cfg.policy, cfg.seed)


def test_two_iterations_of_tpo_and_online(tiny_pipeline, tmp_path):
    out = tmp_path / "transfer"
    cfg, tpo = run(tiny_pipeline, "tpo", out)
    assert [s["iteration"] for s in tpo] == [1, 2]
    for s in tpo:
        assert sum(s["selection"].values()) == 8 and set(s["selection"]) <= {
            "rouge_l",
            "embedding",
            "reward_model",
            "lm",
            "online",
        }
        assert s["annotations"] == 8 * 4 and len(s["dpo"]) >= 1
    assert tpo[-1]["annotations_total"] == 2 * 8 * 4
    first = tpo[0]["selection"]
    assert len(first) >= 3  # uniform until the first refresh (4 prompts), then the UCB's pick
    pairs = read_jsonl(out / "tpo" / "iter_1" / "pairs.jsonl")
    assert len(pairs) == 8 and all(p["prompt"] and isinstance(p["chosen"], str) for p in pairs)
    # the policy moved away from the SFT start
    from safetensors.torch import load_file

    sft = load_file(tiny_pipeline / "models" / "sft" / "model.safetensors")
    it2 = load_file(out / "tpo" / "iter_2" / "policy" / "model.safetensors")
    assert any(not (sft[k] == it2[k]).all() for k in sft)

    # deterministic by seed: another directory, the same bytes
    again = tmp_path / "again"
    run(tiny_pipeline, "tpo", again)
    assert hashes(again / "tpo") == hashes(out / "tpo")
    # resumable: an iteration lost is redone to the same bytes, the finished one is kept
    before = hashes(out / "tpo")
    shutil.rmtree(out / "tpo" / "iter_2")
    _, resumed = run(tiny_pipeline, "tpo", out)
    assert hashes(out / "tpo") == before and resumed[-1]["annotations_total"] == 64

    _, online = run(tiny_pipeline, "online", out)
    assert all(s["selection"] == {"online": 8} and s["source_win_rates"] == {} for s in online)

    # compared on held-out prompts by the gold judge; the selection plot
    paths = Paths.of(cfg, tiny_pipeline)
    rows = read_jsonl(paths.data / "eval_prompts.jsonl")[:8]
    gens = {v: greedy_completions(out / v / "iter_2" / "policy", rows, cfg.policy, 12) for v in ("tpo", "online")}
    posts, gold_fn = load_gold(paths)
    rates = win_rates(gold_judge(posts, gold_fn), rows, gens, "tpo", ["online"])
    assert rates["online"]["n_valid"] == 8 and 0 <= rates["online"]["win_rate_ties_half"] <= 1
    assert rates["online"]["ci_low"] <= rates["online"]["win_rate_ties_half"] <= rates["online"]["ci_high"]
    png = plot_selection(
        {1: tpo[0]["selection"], 2: tpo[1]["selection"]}, ["rouge_l", "embedding", "online"], tmp_path / "sel.png"
    )
    assert png.stat().st_size > 1000


def test_the_budget_stops_a_run_before_it_is_exceeded(tiny_pipeline, tmp_path):
    with pytest.raises(BudgetExhausted, match="annotation budget 40: 32 used, iteration 2 needs 32 more"):
        run(tiny_pipeline, "online", tmp_path / "t", overrides=["transfer.budget=40"])
    assert not (tmp_path / "t" / "online" / "iter_2").exists()  # nothing of the iteration that did not fit
    assert (tmp_path / "t" / "online" / "iter_1" / "iteration.json").exists()


def test_the_transfer_stages_train_every_variant_and_compare_tpo_with_each(tiny_pipeline, tmp_path):
    import json

    from tasks.transfer import transfer, transfer_eval

    wd = tmp_path / "wd"
    shutil.copytree(tiny_pipeline, wd, ignore=shutil.ignore_patterns("rl", "eval", "timings", "mlflow.db"))
    extra = ["transfer.sources=[rouge_l, reward_model]", "transfer.n_eval=8"]
    cfg = load_config(REPO / "params.yaml", profile="ci", overrides=[*SMALL, *extra])
    got = transfer(cfg, wd)["metrics"]
    assert got == dict.fromkeys(
        ["tpo.annotations", "online.annotations", "source-rouge_l.annotations", "source-reward_model.annotations"], 64
    )
    train = json.loads((wd / "metrics" / "transfer" / "train.json").read_text())
    assert train["source-rouge_l"][0]["selection"] == {"rouge_l": 8}
    out = transfer_eval(cfg, wd)["metrics"]
    assert set(out) == {"tpo_vs_online", "tpo_vs_source-rouge_l", "tpo_vs_source-reward_model"}
    report = json.loads((wd / "metrics" / "transfer" / "eval.json").read_text())
    assert [it["iteration"] for it in report["iterations"]] == [1, 2] and report["judge"] == "gold"
    assert all(0 <= r["win_rate_ties_half"] <= 1 for it in report["iterations"] for r in it["tpo_vs"].values())
    assert (wd / "plots" / "transfer_selection.png").stat().st_size > 1000
