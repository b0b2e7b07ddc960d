"""``r2m results`` (flows/results.py): the plan, the stage commands, the links into base/, skipping finished work,
failures; with stand-in stages (fast), then for real on the `ci` profile (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flows import results as runner
from r2m.evaluation.results import ResultsError
from tests.helpers import fake_stage


def test_plan_shared_and_per_seed(tmp_path):
    steps = runner.plan([3, 5], ["grpo"], ["vanilla", "r2m"], tmp_path, "shared")
    assert [(s.stage, s.seed, s.workdir.name) for s in steps[:5]] == [(u, 3, "base") for u in runner.UPSTREAM]
    assert [(s.stage, s.seed, s.workdir.name, s.run) for s in steps[5:9]] == [
        ("rl", 3, "seed_3", "grpo-vanilla"),
        ("evaluate", 3, "seed_3", "grpo-vanilla"),
        ("rl", 3, "seed_3", "grpo-r2m"),
        ("evaluate", 3, "seed_3", "grpo-r2m"),
    ]
    assert len(steps) == 5 + 2 * 2 * 2 and steps[-1].workdir.name == "seed_5"
    per_seed = runner.plan([3, 5], ["grpo"], ["vanilla"], tmp_path, "per-seed")
    assert [(s.stage, s.seed, s.workdir.name) for s in per_seed[:5]] == [(u, 3, "seed_3") for u in runner.UPSTREAM]
    assert len(per_seed) == 2 * (5 + 2) and per_seed[7].stage == "prepare" and per_seed[7].seed == 5
    assert steps[6].log_name == "3-evaluate-grpo-vanilla.log" and steps[0].log_name == "3-prepare.log"
    assert steps[6].marker == tmp_path / "seed_3" / ".done" / "evaluate-grpo-vanilla"


def test_stage_command(tmp_path):
    step = runner.Step("rl", 2, tmp_path / "seed_2", "rloo-r2m")
    cmd = runner.stage_command(step, Path("/p/params.yaml"), "ci", ["rl.steps=8"])
    assert cmd[:4] == [sys.executable, "-m", "tasks", "rl"]
    joined = " ".join(cmd[4:])
    assert f"--workdir {tmp_path / 'seed_2'} --params /p/params.yaml --no-mlflow --set seed=2" in joined
    assert "--profile ci --set rl.steps=8 --algo rloo --method r2m" in joined
    assert "--profile" not in runner.stage_command(runner.Step("sft", 0, tmp_path), Path("p"), None, [])


def test_link_upstream_relative_links(tmp_path):
    base, wd = tmp_path / "base", tmp_path / "seed_1"
    for d in ("data", "models/sft", "models/rm", "models/rm_heldout"):
        (base / d).mkdir(parents=True)
    (base / "metrics").mkdir()
    (base / "metrics" / "best_of_n.json").write_text("{}")
    runner.link_upstream(base, wd)
    runner.link_upstream(base, wd)  # again: nothing to do
    assert os.readlink(wd / "data") == "../base/data"
    assert os.readlink(wd / "models" / "rm_heldout") == "../../base/models/rm_heldout"
    assert os.readlink(wd / "metrics" / "best_of_n.json") == "../../base/metrics/best_of_n.json"
    assert not (wd / "models").is_symlink() and (wd / "models" / "sft").resolve() == (base / "models" / "sft")
    (wd / "models" / "rm").unlink()
    (wd / "models" / "rm").mkdir()
    with pytest.raises(ResultsError, match="not a link"):
        runner.link_upstream(base, wd)


def test_run_step_failure_names_stage_run_seed_and_log(tmp_path):
    step = runner.Step("rl", 4, tmp_path / "seed_4", "grpo-r2m")
    cmd = [sys.executable, "-c", "import sys; print('loading'); sys.exit('ValueError: no rounds')"]
    log = tmp_path / "logs" / step.log_name
    with pytest.raises(ResultsError) as e:
        runner.run_step(step, cmd, {}, log, tmp_path / "base")
    assert str(e.value) == f"seed 4 rl grpo-r2m failed (exit 1); log: {log}; ValueError: no rounds"
    assert "loading" in log.read_text() and not step.marker.exists()


def test_run_step_skips_finished_and_refuses_other_options(tmp_path):
    step = runner.Step("evaluate", 0, tmp_path / "seed_0", "grpo-vanilla")
    log = tmp_path / "log"
    first = runner.run_step(step, [sys.executable, "-c", "pass"], {"profile": "ci"}, log, tmp_path)
    assert not first["skipped"] and step.marker.is_file()
    again = runner.run_step(step, [sys.executable, "-c", "raise SystemExit(1)"], {"profile": "ci"}, log, tmp_path)
    assert again["skipped"] and again["first_run_seconds"] == first["seconds"]
    with pytest.raises(ResultsError, match="other options.*--fresh"):
        runner.run_step(step, [sys.executable, "-c", "pass"], {"profile": "tiny"}, log, tmp_path)


def test_fresh_deletes_only_a_results_dir(tmp_path):
    mine = tmp_path / "out"
    runner.prepare_out(mine, fresh=False)
    (mine / "seed_0").mkdir()
    runner.prepare_out(mine, fresh=True)
    assert not (mine / "seed_0").exists() and (mine / runner.OUT_MARKER).exists()
    other = tmp_path / "project"
    other.mkdir()
    (other / "params.yaml").write_text("")
    with pytest.raises(ResultsError, match="not deleting"):
        runner.prepare_out(other, fresh=True)
    assert (other / "params.yaml").exists()


# ---- the whole runner with stand-in stages --------------------------------------------------------------------------

FAKE_STAGE = fake_stage.ARGS + textwrap.dedent(
    """
    wd, seed = Path(a.workdir), int(dict(s.split("=", 1) for s in a.set)["seed"])
    with open(os.environ["FAKE_CALLS"], "a") as f:
        f.write(f"{a.stage} {a.algo}-{a.method} {seed} {wd.name}\\n")
    if a.stage == os.environ.get("FAKE_FAIL"):
        sys.exit("RuntimeError: stand-in failure")
    if a.stage in ("prepare", "sft", "reward_model", "best_of_n", "preferences"):
        for d in ("data", "models/sft", "models/rm", "models/rm_heldout", "metrics"):
            (wd / d).mkdir(parents=True, exist_ok=True)
        if a.stage == "best_of_n":
            curve = [{"n": n, "sqrt_kl": 0.1 * n, "gold": 0.05 * n} for n in (1, 2, 4)]
            (wd / "metrics" / "best_of_n.json").write_text(json.dumps({"curve": curve}))
    elif a.stage == "rl":
        assert (wd / "models" / "sft").is_dir() and (wd / "data").is_dir(), "upstream not linked"
        run = wd / "models" / "rl" / f"{a.algo}-{a.method}"
        run.mkdir(parents=True, exist_ok=True)
        bonus = 0.2 if a.method == "r2m" else 0.0
        rows = [
            {"step": t, "gold_score": 0.1 * seed + bonus - (t - 6) ** 2 / 50, "proxy_reward": 0.1 * t,
             "kl_to_ref": 0.02 * t, "completion_words": 15.0, "repeated_trigrams": 0.1}
            for t in range(1, 13)
        ]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    elif a.stage == "evaluate":
        win = {"win_rate_ties_half": 0.5 + 0.1 * seed, "ci_low": 0.3, "ci_high": 0.7, "n_valid": 8}
        ckpt = {"round": 2, "step": 12, "gold": 0.3 + 0.1 * seed, "proxy": 1.0, "vs_sft": win, "vs_reference": win}
        out = wd / "metrics" / "eval" / f"{a.algo}-{a.method}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"checkpoints": {"final": ckpt, "best_heldout": ckpt}}))
    print(f"{a.stage} done")
    """
)


@pytest.fixture()
def fake_stages(tmp_path, monkeypatch):
    script = tmp_path / "fake_stage.py"
    script.write_text(FAKE_STAGE)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    real = runner.stage_command
    monkeypatch.setattr(runner, "stage_command", lambda *a, **k: [sys.executable, str(script), *real(*a, **k)[3:]])
    return calls


def test_runner_with_stand_in_stages(fake_stages, tmp_path):
    out = tmp_path / "out"
    lines: list[str] = []
    kw = dict(profile="ci", overrides=["rl.steps=12"], command="r2m results --seeds 0 1", echo=lines.append)
    res = runner.results([0, 1], ["grpo"], ["vanilla", "r2m"], out, **kw)
    assert len(lines) == 5 + 2 * 2 * 2 + 1
    assert lines[0].startswith("[ 1/13] seed 0 (base) prepare  ") and lines[0].endswith(" s")
    assert lines[6].startswith("[ 7/13] seed 0 evaluate grpo-vanilla  ")
    calls = fake_stages.read_text().splitlines()
    assert calls[:5] == [f"{s} None-None 0 base" for s in runner.UPSTREAM] and len(calls) == 13
    assert "rl grpo-r2m 1 seed_1" in calls
    for f in ("results.json", "results.md", "frontier.png", "timings.json", "logs/1-rl-grpo-r2m.log"):
        assert (out / f).is_file(), f
    assert "rl done" in (out / "logs" / "1-rl-grpo-r2m.log").read_text()
    assert os.readlink(out / "seed_1" / "models" / "sft") == "../../base/models/sft"
    assert res["best_of_n"] == [{"sqrt_kl": 0.1 * n, "gold": 0.05 * n} for n in (1, 2, 4)]
    d = res["paired"][0]["metrics"]["gold_final"]
    assert d["mean"] == pytest.approx(0.2) and d["verdict"] == "higher" and d["n"] == 2
    md = (out / "results.md").read_text().splitlines()
    assert md[0] == "Produced by: `r2m results --seeds 0 1`" and md[-1].startswith("Timing: ")
    timings = json.loads((out / "timings.json").read_text())
    assert len(timings["steps"]) == 13 and timings["total_seconds"] > 0
    first_json = (out / "results.json").read_bytes()
    assert b"seconds" not in first_json and str(tmp_path).encode() not in first_json

    # again: only rl is called (it skips by itself); results.json byte-identical
    lines.clear()
    fake_stages.write_text("")
    runner.results([0, 1], ["grpo"], ["vanilla", "r2m"], out, **kw)
    assert sorted(fake_stages.read_text().splitlines()) == sorted(
        f"rl grpo-{m} {s} seed_{s}" for s in (0, 1) for m in ("vanilla", "r2m")
    )
    assert sum("done before" in ln for ln in lines) == 5 + 4
    assert (out / "results.json").read_bytes() == first_json
    assert "it skipped 9 steps done before" in (out / "results.md").read_text().splitlines()[-1]

    with pytest.raises(ResultsError, match="other options"):
        runner.results([0, 1], ["grpo"], ["vanilla", "r2m"], out, **{**kw, "overrides": ["rl.steps=6"]})


def test_runner_failure_stops_with_one_line(fake_stages, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "evaluate")
    lines: list[str] = []
    with pytest.raises(ResultsError) as e:
        runner.results([7], ["rloo"], ["vanilla"], tmp_path / "out", echo=lines.append)
    log = tmp_path / "out" / "logs" / "7-evaluate-rloo-vanilla.log"
    assert str(e.value) == f"seed 7 evaluate rloo-vanilla failed (exit 1); log: {log}; RuntimeError: stand-in failure"
    assert len(lines) == 6 and not (tmp_path / "out" / "results.json").exists()


def test_runner_rejects_seed_override_and_duplicates(tmp_path):
    with pytest.raises(ResultsError, match="--set seed"):
        runner.results([0], ["grpo"], ["vanilla"], tmp_path, overrides=["seed=3"])
    with pytest.raises(ResultsError, match="--methods"):
        runner.results([0], ["grpo"], ["vanilla", "vanilla"], tmp_path)


# ---- for real: the `ci` profile, 2 seeds, grpo, vanilla and r2m ----------------------------------------------------


@pytest.mark.slow
def test_r2m_results_ci_profile(tmp_path):
    r2m = Path(sys.executable).parent / "r2m"
    out = tmp_path / "results"
    cmd = [str(r2m), "results", "--seeds", "0", "1", "--algos", "grpo", "--methods", "vanilla", "r2m"]
    cmd += ["--out", str(out), "--profile", "ci"]
    first = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    for f in ("results.md", "results.json", "frontier.png", "timings.json"):
        assert (out / f).is_file(), f
    res = json.loads((out / "results.json").read_text())
    assert [(r["algo"], r["method"]) for r in res["summary"]] == [("grpo", "vanilla"), ("grpo", "r2m")]
    assert res["summary"][0]["metrics"]["gold_final"]["n"] == 2
    assert (out / "results.md").read_text().splitlines()[0].startswith("Produced by: `r2m results --seeds 0 1")
    first_json = (out / "results.json").read_bytes()

    second = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    progress = [ln for ln in second.stdout.splitlines() if ln.startswith("[")]
    assert len(progress) == 5 + 2 * 2 * 2
    assert all("done before" in ln for ln in progress if " rl " not in ln)
    assert "already finished" in (out / "logs" / "1-rl-grpo-r2m.log").read_text()  # rl skipped by itself
    assert (out / "results.json").read_bytes() == first_json
