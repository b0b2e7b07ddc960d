"""Trainer callbacks: per-step metrics (resume-safe JSONL) and a policy export at the end of every round."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

METRICS_FILE = "metrics.jsonl"


def rss_gb() -> float:
    """Resident memory of this process now (GB); sampled every step, its max is the run's peak."""
    import psutil

    return psutil.Process().memory_info().rss / 1024**3


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_timing(key: str) -> bool:
    """Wall-clock and memory figures (``step_time``, ``r2m_update_s``, ``rss_gb``, ...): they differ from run to run, so
    they are kept apart from the quality metrics, which are bitwise reproducible."""
    return key in TIMING_KEYS or key.endswith(("_s", "_seconds", "_time"))


TIMING_KEYS = frozenset({"step_time", "rss_gb", "train_runtime", "train_samples_per_second", "train_steps_per_second"})


class MetricsRecorder(TrainerCallback):
    """Appends one JSON row per optimiser step to ``run_dir/metrics.jsonl`` (quality metrics) and the step's timings
    (``step_time_s``, ``rss_gb``, TRL's and R2M's timers) to ``timings_file``.

    On resume the rows past the checkpoint's step are dropped from both first, so they always match the policy.
    """

    def __init__(
        self,
        run_dir: Path,
        timings_file: Path,
        resume_step: int = 0,
        extras: list[Callable[[], dict]] | None = None,
    ) -> None:
        self.extras = extras or []  # e.g. the R2M updater's losses, merged into each step's row
        self.path = Path(run_dir) / METRICS_FILE
        self.timings_file = Path(timings_file)
        for path in (self.path, self.timings_file):
            kept = [r for r in read_rows(path) if r["step"] <= resume_step]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._t0 = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:  # only the per-step training logs (not the final summary)
            return
        # timed up to the log, which follows every callback's on_step_end (e.g. the R2M update), so it is included
        step_time = time.perf_counter() - self._t0
        row = {"step": int(state.global_step)}
        for k, v in logs.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                row[k] = float(v)
        for extra in self.extras:
            row.update(extra())
        timing = {"step": row["step"], **{k: row.pop(k) for k in list(row) if is_timing(k)}}
        timing.update(step_time_s=step_time, rss_gb=rss_gb())
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        with self.timings_file.open("a") as f:
            f.write(json.dumps(timing) + "\n")


class CheckpointScrubber(TrainerCallback):
    """Makes a saved checkpoint depend only on the run, not on the machine, the directory or the process: timings
    are dropped from ``trainer_state.json``'s log history, and ``training_args.bin`` (a pickle of the arguments with
    absolute paths) and TRL's model card (its tags in hash-seed-dependent set order) are removed; neither is read
    on resume."""

    def on_save(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        (ckpt / "training_args.bin").unlink(missing_ok=True)
        (Path(args.output_dir) / "README.md").unlink(missing_ok=True)
        state_file = ckpt / "trainer_state.json"
        if state_file.exists():
            data = json.loads(state_file.read_text())
            data["log_history"] = [
                {k: v for k, v in entry.items() if not is_timing(k)} for entry in data.get("log_history", [])
            ]
            state_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def fresh_dir(path: Path) -> Path:
    """``path`` emptied (removed if present): the staging dir of :func:`publish_dir`."""
    if path.exists():
        shutil.rmtree(path)
    return path


def publish_dir(tmp: Path, out: Path) -> None:
    """Replace ``out`` by the fully written ``tmp``: a crash mid-export never leaves a half-written ``out``."""
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


class RoundExporter(TrainerCallback):
    """At each round boundary (a checkpoint save), export the policy to ``run_dir/round_<k>/policy`` and call
    ``extra_export(round_dir)`` (R2M saves its reward head there)."""

    def __init__(
        self, run_dir: Path, steps_per_round: int, tokenizer, extra_export: Callable[[Path], None] | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.steps_per_round = steps_per_round
        self.tokenizer = tokenizer
        self.extra_export = extra_export

    def on_save(self, args, state, control, model=None, **kwargs):
        k = state.global_step // self.steps_per_round
        out = self.run_dir / f"round_{k}"
        tmp = fresh_dir(self.run_dir / f".round_{k}.tmp")
        model.save_pretrained(tmp / "policy", safe_serialization=True)
        self.tokenizer.save_pretrained(tmp / "policy")
        if self.extra_export is not None:
            self.extra_export(tmp)
        (tmp / "round.json").write_text(json.dumps({"round": k, "step": state.global_step}))
        publish_dir(tmp, out)


class ProgressBar(TrainerCallback):
    """One tqdm bar per run with the numbers people watch (proxy, gold, KL, words), instead of raw log dicts."""

    KEYS = (("proxy_reward", "proxy"), ("gold_score", "gold"), ("kl_to_ref", "kl"), ("completion_words", "words"))

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.desc, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs:
            self.bar.set_postfix({short: f"{logs[k]:.2f}" for k, short in self.KEYS if k in logs})

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
