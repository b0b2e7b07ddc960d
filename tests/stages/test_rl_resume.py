"""A crashed RL run resumes from its last finished round; a changed config never resumes a stale run, and a failing
one leaves the finished run exactly as it was."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from r2m.config import load_config
from r2m.paths import Paths
from r2m.rl.assembly import build_run
from r2m.rl.runner import train_rounds
from tasks.rl import write_outputs
from tests.helpers.crash import Crash


@pytest.mark.parametrize("method", ["vanilla", "r2m"])
def test_crash_then_resume_from_last_round(tiny_pipeline, repo, tmp_path, method):
    wd = tmp_path / "wd"
    shutil.copytree(tiny_pipeline, wd, ignore=shutil.ignore_patterns("rl"))
    cfg = load_config(repo / "params.yaml", profile="ci", overrides=["rl.steps=6", "rl.rounds=3"])
    paths = Paths.of(cfg, wd)
    spec, reward_fn, tok = build_run(cfg, paths, "grpo", method)
    spec.callbacks.append(Crash(at=5))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_rounds(spec, cfg, reward_fn, tok, progress=False)
    assert (spec.run_dir / "round_2").exists() and not (spec.run_dir / "final").exists()

    spec, reward_fn, tok = build_run(cfg, paths, "grpo", method)
    if method == "r2m":  # the resumed head is the one saved with checkpoint-4, not a fresh one
        from r2m.models.r2m_head import R2MRewardHead

        head = reward_fn.scorer.head
        fresh = {k: v.clone() for k, v in head.state_dict().items()}
        spec.on_resume(spec.run_dir / "checkpoints" / "checkpoint-4")
        saved = R2MRewardHead.load(spec.run_dir / "round_2" / "reward_head").state_dict()
        assert all(torch.equal(v, saved[k]) for k, v in head.state_dict().items())
        assert any(not torch.equal(fresh[k], saved[k]) for k in saved)  # 4 updates moved it
    status = train_rounds(spec, cfg, reward_fn, tok, progress=False)
    assert status == {"resumed_from": 4, "skipped": False}
    rows = [json.loads(x) for x in (spec.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # the crashed step 5 row was replaced, not duplicated
    summary = write_outputs(paths, f"grpo-{method}")
    assert summary["steps"] == 6 and "resumed_from_step" not in summary  # a resumed run's outputs carry no trace of it

    # finished: a rerun does nothing
    spec, reward_fn, tok = build_run(cfg, paths, "grpo", method)
    assert train_rounds(spec, cfg, reward_fn, tok, progress=False)["skipped"] is True

    # another config that fails: the finished run is left exactly as it was (the new one trains beside it)
    before = tree_hashes(spec.run_dir)
    cfg2 = load_config(repo / "params.yaml", profile="ci", overrides=["rl.steps=2", "rl.rounds=1"])
    spec, reward_fn, tok = build_run(cfg2, paths, "grpo", method)
    spec.callbacks.append(Crash(at=1))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_rounds(spec, cfg2, reward_fn, tok, progress=False)
    assert tree_hashes(spec.run_dir) == before
    # ... and once it succeeds, the old run is moved aside, not resumed or overwritten
    spec, reward_fn, tok = build_run(cfg2, paths, "grpo", method)
    assert train_rounds(spec, cfg2, reward_fn, tok, progress=False) == {"resumed_from": 0, "skipped": False}
    stale_root = spec.run_dir.parent.with_name("rl.stale")
    stale = [p for p in stale_root.iterdir() if p.name.startswith(f"grpo-{method}-")]
    assert len(stale) == 1 and tree_hashes(stale[0]) == before
    assert json.loads((spec.run_dir / "run_config.json").read_text()) == spec.fingerprint
    assert not any(spec.run_dir.parent.with_name("rl.pending").iterdir())


def tree_hashes(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }
