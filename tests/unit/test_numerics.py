"""Numerical faults in RL (r2m.rl.numerics): recorded per step, the step skipped, the run stopped after N, a
diverging reward reported once; non-finite metrics named, never dropped silently."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from r2m.rl.callbacks import MetricsRecorder, ProgressBar
from r2m.rl.numerics import FaultLog, NumericalFault, NumericsGuard, grads_finite, nonfinite_count


def test_fault_log_skips_flagged_steps_and_stops_at_the_limit():
    faults = FaultLog(max_steps=2, max_scale=10.0)
    assert faults.end_step(1) is False and faults.row() == {}
    faults.flag("reward", "3 of 8 rewards non-finite (VanillaScorer)")
    assert faults.end_step(2) is True
    assert faults.row() == {"skipped_nonfinite": ["reward: 3 of 8 rewards non-finite (VanillaScorer)"]}
    assert faults.row() == {}  # taken once
    faults.check_stop()  # one skipped step of 2 allowed
    faults.flag("policy gradient", "non-finite")
    faults.end_step(5)
    with pytest.raises(NumericalFault, match=r"2 RL steps .*steps 2, 5; rl.max_nonfinite_steps=2.*policy gradient"):
        faults.check_stop()


def test_reward_scale_ratio_and_divergence_reported_once(caplog):
    faults = FaultLog(max_steps=3, max_scale=10.0)
    proxy = torch.tensor([1.0, -1.0, 1.0, -1.0])
    assert faults.scale(1, proxy * 2, proxy) == pytest.approx(2.0)
    with caplog.at_level("WARNING"):
        assert faults.scale(2, proxy * 50, proxy) == pytest.approx(50.0)
        assert faults.scale(3, proxy * 60, proxy) == pytest.approx(60.0)
    assert caplog.text.count("diverging") == 1 and faults.diverged_step == 2
    faults.end_step(2)
    assert faults.row() == {"reward_diverged": 1.0}
    assert faults.scale(4, torch.tensor([math.nan, 1.0]), proxy[:2]) is None  # a non-finite batch: no ratio
    assert faults.scale(4, proxy, torch.zeros(4)) is None


def test_restore_counts_the_skips_before_a_resume():
    rows = [
        {"step": 1},
        {"step": 2, "skipped_nonfinite": ["reward: x"], "reward_diverged": 1.0},
        {"step": 3, "skipped_nonfinite": ["reward: y"]},
    ]
    faults = FaultLog(max_steps=2, max_scale=10.0)
    faults.restore(rows, step=2)
    assert faults.skipped == [{"step": 2, "sources": ["reward: x"]}] and faults.diverged_step == 2
    faults.check_stop()


def _state(step: int) -> TrainerState:
    s = TrainerState()
    s.global_step = step
    return s


def test_guard_drops_non_finite_gradients_so_the_optimiser_step_changes_nothing(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    faults = FaultLog(max_steps=5, max_scale=10.0)
    guard = NumericsGuard(faults)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    model(torch.full((1, 4), math.inf)).sum().backward()  # inf input: NaN / inf gradients
    assert not grads_finite(model.parameters())
    guard.on_pre_optimizer_step(args, _state(0), TrainerControl(), model=model)
    assert all(p.grad is None for p in model.parameters())
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    guard.on_step_end(args, _state(1), TrainerControl())
    assert faults.skipped[0]["step"] == 1 and "policy gradient" in faults.skipped[0]["sources"][0]
    # a finite step with a flagged reward is dropped too; a clean one is not
    model(torch.ones(1, 4)).sum().backward()
    faults.flag("reward", "1 of 4 rewards non-finite")
    guard.on_pre_optimizer_step(args, _state(1), TrainerControl(), model=model)
    assert all(p.grad is None for p in model.parameters())
    guard.on_step_end(args, _state(2), TrainerControl())
    model(torch.ones(1, 4)).sum().backward()
    guard.on_pre_optimizer_step(args, _state(2), TrainerControl(), model=model)
    assert all(p.grad is not None for p in model.parameters())
    assert nonfinite_count(torch.tensor([1.0, math.nan, -math.inf])) == 2


def test_metrics_recorder_names_non_finite_values_and_the_bar_shows_them(tmp_path):
    rec = MetricsRecorder(tmp_path, tmp_path / "t.jsonl", extras=[lambda: {"skipped_nonfinite": ["reward: x"]}])
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    logs = {"loss": math.nan, "grad_norm": math.inf, "proxy_reward": 0.5}
    rec.on_log(args, _state(1), TrainerControl(), logs=logs)
    (row,) = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert row["nonfinite"] == ["grad_norm", "loss"] and row["proxy_reward"] == 0.5
    assert row["skipped_nonfinite"] == ["reward: x"] and "loss" not in row
    bar = ProgressBar("rl")
    bar.bar = type("Bar", (), {"set_postfix": lambda self, d: setattr(self, "shown", d)})()
    bar.on_log(args, _state(1), TrainerControl(), logs={"proxy_reward": None, "kl_to_ref": math.nan})
    assert bar.bar.shown == {"proxy": "None", "kl": "nan"}
