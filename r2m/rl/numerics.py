"""Numerical faults during RL: a non-finite reward, loss, policy gradient or R2M head update is detected in the step
it happens, logged with its source, and the step skipped; after ``rl.max_nonfinite_steps`` such steps the run stops
with :class:`NumericalFault` naming the sources. A reward whose scale runs away from the frozen vanilla RM's
(``rl.max_reward_scale``) is reported once with a warning and logged every step (``reward_scale_ratio``).

Skipping a policy step: the gradients are dropped before the optimiser step (AdamW skips parameters without a
gradient, so neither the weights nor the moment estimates change). Skipping an R2M update: its optimiser does not
step and the head keeps its parameters.
"""

from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback

from r2m.distributed import any_rank

log = logging.getLogger(__name__)


class NumericalFault(RuntimeError):
    """Too many RL steps had non-finite values: the run stops (what ran so far stays: its rounds and checkpoints)."""


def nonfinite_count(t: torch.Tensor) -> int:
    """How many entries of ``t`` are NaN or +-inf."""
    return int((~torch.isfinite(t.detach())).sum())


def grads_finite(parameters) -> bool:
    """Whether every gradient of ``parameters`` is finite (one fused norm over them; no gradient counts as finite)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return True
    norms = torch._foreach_norm(grads)
    return bool(torch.isfinite(torch.stack([n.float() for n in norms]).sum()))


class FaultLog:
    """The faults of the current step (``flag``), the skipped steps so far, and the stop rule.

    ``max_steps``: the run stops at the ``max_steps``-th step with a fault. ``max_scale``: the bound on the ratio
    of the training reward's RMS to the frozen vanilla RM's (the proxy's) that is reported as divergence."""

    def __init__(self, max_steps: int, max_scale: float) -> None:
        self.max_steps = max_steps
        self.max_scale = max_scale
        self.pending: list[str] = []  # "<source>: <what>" found in the step being run
        self.skipped: list[dict] = []  # {"step", "sources"} of every skipped step
        self.diverged_step: int | None = None
        self._row: dict = {}

    def restore(self, rows: list[dict], step: int) -> None:
        """Take the skipped steps and the divergence step up to ``step`` from a run's metrics rows (a resume)."""
        done = [r for r in rows if r["step"] <= step]
        self.skipped = [
            {"step": r["step"], "sources": r["skipped_nonfinite"]} for r in done if "skipped_nonfinite" in r
        ]
        self.diverged_step = next((r["step"] for r in done if r.get("reward_diverged")), None)

    def flag(self, source: str, detail: str) -> None:
        """Record a non-finite value in the current step (the step will be skipped)."""
        self.pending.append(f"{source}: {detail}")

    def scale(self, step: int, train: torch.Tensor, proxy: torch.Tensor | None) -> float | None:
        """``RMS(train) / RMS(proxy)`` of one batch's rewards; warns once when it passes ``max_scale``."""
        if proxy is None or proxy.numel() == 0 or nonfinite_count(train) or nonfinite_count(proxy):
            return None
        denom = float(proxy.float().pow(2).mean().sqrt())
        if denom == 0.0:
            return None
        ratio = float(train.float().pow(2).mean().sqrt()) / denom
        if ratio > self.max_scale and self.diverged_step is None:
            self.diverged_step = step
            log.warning(
                "step %d: the training reward's scale is %.3g x the frozen vanilla RM's (bound rl.max_reward_scale="
                "%g): the reward is diverging from the RM it started as",
                step,
                ratio,
                self.max_scale,
            )
        return ratio

    def end_step(self, step: int) -> bool:
        """Close step ``step``: True (and a warning) when it had a fault and was skipped."""
        if self.diverged_step == step:
            self._row["reward_diverged"] = 1.0
        if not self.pending:
            return False
        sources, self.pending = self.pending, []
        self.skipped.append({"step": step, "sources": sources})
        self._row["skipped_nonfinite"] = sources
        log.warning("step %d skipped (non-finite values): %s", step, "; ".join(sources))
        return True

    def check_stop(self) -> None:
        """Raise :class:`NumericalFault` once ``max_steps`` steps were skipped."""
        if len(self.skipped) >= self.max_steps:
            steps = ", ".join(str(s["step"]) for s in self.skipped)
            raise NumericalFault(
                f"{len(self.skipped)} RL steps had non-finite values (steps {steps}; rl.max_nonfinite_steps="
                f"{self.max_steps}): stopping. Last: {'; '.join(self.skipped[-1]['sources'])}"
            )

    def row(self) -> dict:
        """What the step's metrics row records about faults (taken once)."""
        row, self._row = self._row, {}
        return row


class NumericsGuard(TrainerCallback):
    """Checks the policy's gradients before every optimiser step and drops them when they, or anything flagged in
    the step (a non-finite reward), are not finite. Closes each step's fault record (:meth:`FaultLog.end_step`) at
    the end of the step, after the R2M update (so it must come after :class:`r2m.rl.r2m.R2MUpdater` in the
    callbacks), and stops the run after the step's metrics row is written (after
    :class:`r2m.rl.callbacks.MetricsRecorder`)."""

    def __init__(self, faults: FaultLog) -> None:
        self.faults = faults

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        params = [p for p in model.parameters() if p.requires_grad] if model is not None else []
        if not grads_finite(params):
            self.faults.flag("policy gradient", "non-finite (the loss or a reward was NaN/inf)")
        # every rank skips together, or the replicas would part (a reward may be NaN on one rank's rows only)
        if any_rank(bool(self.faults.pending)):
            if not self.faults.pending:
                self.faults.flag("another rank", "a non-finite value in its part of the batch")
            for p in params:
                p.grad = None

    def on_step_end(self, args, state, control, **kwargs):
        self.faults.end_step(int(state.global_step))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:  # after MetricsRecorder wrote the step's row (it comes first)
            self.faults.check_stop()
