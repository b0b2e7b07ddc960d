"""A trainer callback that kills an RL run after a given step: the crash of the resume tests."""

from __future__ import annotations

from transformers import TrainerCallback


class Crash(TrainerCallback):
    """Raises after step ``at`` (mid-round when ``at`` is not a round boundary: the last checkpoint is then the end
    of the previous round)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise RuntimeError(f"simulated crash at step {self.at}")
