"""``r2m sweep`` with stand-in stages: what reruns, what is linked, the table's numbers, option checks."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

import flows.results as runner
import flows.sweep as sweep_mod
from r2m.evaluation.results import ResultsError
from tests.helpers import fake_stage

# a stand-in for `python -m tasks <stage>`: upstream writes the files the sweep links; rl writes a curve whose final
# gold rises with r2m.rm_lr (bonus = 10 * rm_lr) and per-round accuracies; evaluate a checkpoint table
FAKE_STAGE = fake_stage.ARGS + textwrap.dedent(
    """
    sets = dict(s.split("=", 1) for s in a.set)
    wd, seed = Path(a.workdir), int(sets["seed"])
    with open(os.environ["FAKE_CALLS"], "a") as f:
        f.write(f"{a.stage} {a.algo}-{a.method} {seed} {wd.parent.name}/{wd.name}\\n")
    if a.stage in ("prepare", "sft", "reward_model", "best_of_n", "preferences"):
        for d in ("data", "models/sft", "models/rm", "models/rm_heldout", "metrics"):
            (wd / d).mkdir(parents=True, exist_ok=True)
        (wd / "metrics" / "reward_model.json").write_text(json.dumps({"test_accuracy": 0.5}))
        if a.stage == "best_of_n":
            (wd / "metrics" / "best_of_n.json").write_text(json.dumps({"curve": []}))
    elif a.stage == "rl":
        assert (wd / "models" / "sft").is_dir(), "upstream not linked"
        run = wd / "models" / "rl" / f"{a.algo}-{a.method}"
        run.mkdir(parents=True, exist_ok=True)
        bonus = 10 * float(sets.get("r2m.rm_lr", "1e-4")) if a.method == "r2m" else 0.0
        rows = [{"step": t, "gold_score": 0.1 * seed + bonus * t / 12, "proxy_reward": 0.1 * t, "kl_to_ref": 0.02 * t,
                 "completion_words": 15.0, "repeated_trigrams": 0.1} for t in range(1, 13)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
        summary = {}
        if a.method == "r2m":
            acc = 0.5 + bonus / 10 + 0.01 * seed
            summary = {"rm_test_accuracy_per_round": [0.5, acc], "attention_only_accuracy_per_round": [0.4, 0.45],
                       "attention_norm_per_round": [0.1, 0.2 + seed]}
        (wd / "metrics" / "rl").mkdir(parents=True, exist_ok=True)
        (wd / "metrics" / "rl" / f"{a.algo}-{a.method}.json").write_text(json.dumps(summary))
    elif a.stage == "evaluate":
        win = {"win_rate_ties_half": 0.5, "ci_low": 0.3, "ci_high": 0.7, "n_valid": 8}
        ckpt = {"round": 2, "step": 12, "gold": 0.3, "proxy": 1.0, "vs_sft": win, "vs_reference": win}
        out = wd / "metrics" / "eval" / f"{a.algo}-{a.method}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"checkpoints": {"final": ckpt, "best_heldout": ckpt}}))
    """
)


@pytest.fixture()
def fake(tmp_path, monkeypatch):
    script = tmp_path / "fake_stage.py"
    script.write_text(FAKE_STAGE)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    real = runner.stage_command
    stand_in = lambda *a, **k: [sys.executable, str(script), *real(*a, **k)[3:]]  # noqa: E731
    monkeypatch.setattr(runner, "stage_command", stand_in)
    monkeypatch.setattr(sweep_mod, "stage_command", stand_in)
    res = tmp_path / "results"
    runner.results([0, 1, 2], ["grpo"], ["vanilla", "r2m"], res, profile="ci", echo=lambda _: None)
    calls.write_text("")
    return res, calls


def test_sweep_reruns_only_the_method_and_compares_with_the_same_vanilla(fake, tmp_path):
    res, calls = fake
    out = tmp_path / "sweeps"
    lines: list[str] = []
    doc = sweep_mod.sweep(res, "r2m.rm_lr", ["1e-3", "1e-4"], "r2m", ["grpo"], [0, 1, 2], out, echo=lines.append)
    ran = calls.read_text().splitlines()
    # 1e-4 is the configured value: linked from the results directory, not rerun; nothing upstream or vanilla reruns
    assert sorted(ran) == sorted(
        f"{s} grpo-r2m {k} r2m.rm_lr=1e-3/seed_{k}" for k in (0, 1, 2) for s in ("rl", "evaluate")
    )
    assert doc["configured"] == "1e-4"
    seed0 = out / "r2m.rm_lr=1e-3" / "seed_0"
    link = seed0 / "models" / "rl" / "grpo-vanilla"
    assert os.readlink(link) == "../../../../../results/seed_0/models/rl/grpo-vanilla"  # relative: the tree can move
    assert link.resolve() == (res / "seed_0" / "models" / "rl" / "grpo-vanilla").resolve()
    assert (out / "r2m.rm_lr=1e-4" / "seed_0" / "models" / "rl" / "grpo-r2m").is_symlink()
    rows = {r["value"]: r for r in doc["rows"]}
    # gold_final: mean of the last 10 of 12 steps of bonus * t / 12 (vanilla: 0), same for every seed -> CI 0
    want = 10 * 1e-3 * sum(range(3, 13)) / 10 / 12
    gf = rows["1e-3"]["paired"]["gold_final"]
    assert gf["mean"] == pytest.approx(want) and gf["verdict"] == "higher" and gf["n"] == 3
    assert rows["1e-3"]["rm_acc"]["mean"] == pytest.approx(0.5 + 1e-3 + 0.01)
    assert rows["1e-3"]["rm_acc_change"]["mean"] == pytest.approx(1e-3 + 0.01)
    assert rows["1e-4"]["attention_norm"]["mean"] == pytest.approx(1.2)
    md = (out / "sweep-r2m.rm_lr.md").read_text()
    assert "| grpo | 1e-4 (configured) |" in md and "| grpo | 1e-3 |" in md
    assert json.loads((out / "sweep-r2m.rm_lr.json").read_text())["rows"] == doc["rows"]

    # again: every step is done, nothing runs, same table
    calls.write_text("")
    again = sweep_mod.sweep(res, "r2m.rm_lr", ["1e-3", "1e-4"], "r2m", ["grpo"], [0, 1, 2], out, echo=lambda _: None)
    assert calls.read_text().splitlines() == [f"rl grpo-r2m {k} r2m.rm_lr=1e-3/seed_{k}" for k in (0, 1, 2)]
    assert again["rows"] == doc["rows"]


def test_sweep_of_an_ablation_runs_it_at_the_configured_value(fake, tmp_path):
    res, calls = fake  # the results directory ran vanilla and r2m only
    out = tmp_path / "sweeps"
    doc = sweep_mod.sweep(res, "r2m.rm_lr", ["1e-4"], "r2m_once", ["grpo"], [0, 1], out, echo=lambda _: None)
    assert doc["configured"] == "1e-4"
    assert sorted(calls.read_text().splitlines()) == sorted(
        f"{s} grpo-r2m_once {k} r2m.rm_lr=1e-4/seed_{k}" for k in (0, 1) for s in ("rl", "evaluate")
    )
    assert not (out / "r2m.rm_lr=1e-4" / "seed_0" / "models" / "rl" / "grpo-r2m_once").is_symlink()
    assert (out / "sweep-r2m_once-r2m.rm_lr.md").is_file() and not (out / "sweep-r2m.rm_lr.md").exists()


def test_sweep_refuses_bad_input(fake, tmp_path):
    res, _ = fake
    with pytest.raises(ResultsError, match="vanilla is the baseline"):
        sweep_mod.sweep(res, "r2m.rm_lr", ["1e-3"], "vanilla", ["grpo"], [0], tmp_path / "s")
    with pytest.raises(ResultsError, match="--param r2m.nope"):
        sweep_mod.sweep(res, "r2m.nope", ["1"], "r2m", ["grpo"], [0], tmp_path / "s")
    with pytest.raises(ResultsError, match="distinct"):
        sweep_mod.sweep(res, "r2m.rm_lr", ["1e-3", "1e-3"], "r2m", ["grpo"], [0], tmp_path / "s")
    with pytest.raises(ResultsError, match="no finished `r2m results`"):
        sweep_mod.sweep(tmp_path / "nothing", "r2m.rm_lr", ["1e-3"], "r2m", ["grpo"], [0], tmp_path / "s")
    with pytest.raises(ResultsError, match="seed_7.*missing"):
        sweep_mod.sweep(res, "r2m.rm_lr", ["1e-3"], "r2m", ["grpo"], [7], tmp_path / "s7")
