"""Trainer callbacks: per-step metrics (resume-safe JSONL) and a policy export at the end of every round.

Under ``accelerate launch`` every rank runs every callback; the files are written by the main process alone
(:func:`r2m.distributed.is_main_process`), and what needs every rank (gathering a sharded policy's state dict, the
exports' policy forwards) runs on all of them, with a barrier before the next step. In a plain process the callbacks
do exactly what they did before.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

from r2m.data.io import ROW, DataValidationError
from r2m.distributed import barrier, broadcast_object, is_distributed, is_main_process

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def rss_gb() -> float:
    """Resident memory of this process now (GB); sampled every step, its max is the run's peak."""
    import psutil

    return psutil.Process().memory_info().rss / 1024**3


def read_rows(path: Path) -> list[dict]:
    """The rows of a JSONL metrics file. A last line cut short by a kill (no newline after it, not valid JSON) is
    dropped with a warning (its step is redone on resume); a bad line anywhere else is an error naming it."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines()
    rows = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) and not text.endswith("\n"):
                log.warning("%s: line %d was cut short (the run was killed while writing it); ignored", path, i)
                break
            raise DataValidationError(path, i, ROW, f"not valid JSON ({e.msg})") from None
    return rows


def is_timing(key: str) -> bool:
    """Wall-clock and memory figures (``step_time``, ``r2m_update_s``, ``rss_gb``, ...): they differ from run to run, so
    they are kept apart from the quality metrics, which are bitwise reproducible."""
    return key in TIMING_KEYS or key.endswith(("_s", "_seconds", "_time"))


TIMING_KEYS = frozenset({"step_time", "rss_gb", "train_runtime", "train_samples_per_second", "train_steps_per_second"})


class MetricsRecorder(TrainerCallback):
    """Appends one JSON row per optimiser step to ``run_dir/metrics.jsonl`` (quality metrics) and the step's timings
    (``step_time_s``, ``rss_gb``, TRL's and R2M's timers) to ``timings_file``.

    On resume the rows past the checkpoint's step are dropped from both first, so they always match the policy.
    Only the main process writes (TRL's logs are already means over the ranks): one row per step.
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
        self.writes = is_main_process()
        for path in (self.path, self.timings_file) if self.writes else ():
            kept = [r for r in read_rows(path) if r["step"] <= resume_step]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._t0 = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or not self.writes:  # the per-step training logs (not the final summary)
            return
        # timed up to the log, which follows every callback's on_step_end (e.g. the R2M update), so it is included
        step_time = time.perf_counter() - self._t0
        row: dict = {"step": int(state.global_step)}
        nonfinite = []
        for k, v in logs.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                if math.isfinite(v):
                    row[k] = float(v)
                else:  # JSON has no NaN / inf: the key is named instead of silently dropped
                    nonfinite.append(k)
        if nonfinite:
            row["nonfinite"] = sorted(nonfinite)
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
    on resume. Run by the process that writes the checkpoint (``args.should_save``)."""

    def on_save(self, args, state, control, **kwargs):
        if not getattr(args, "should_save", True):
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        (ckpt / "training_args.bin").unlink(missing_ok=True)
        (Path(args.output_dir) / "README.md").unlink(missing_ok=True)
        state_file = ckpt / "trainer_state.json"
        if state_file.exists():
            data = json.loads(state_file.read_text())
            data["log_history"] = [
                {k: v for k, v in entry.items() if not is_timing(k)} for entry in data.get("log_history", [])
            ]
            tmp = state_file.with_name(f".{state_file.name}.tmp")  # a kill mid-write never leaves half a file
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, state_file)


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


def shards_weights(trainer) -> bool:
    """Whether the trainer's engine partitions or may partition the policy's weights over the ranks (DeepSpeed,
    FSDP): its full state dict must then be gathered by every rank together."""
    return bool(getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False))


def export_policy(model, tokenizer, out: Path, trainer=None) -> None:
    """Save the policy (safetensors) and its tokenizer to ``out`` from the main process.

    Call it on every rank: under DeepSpeed / FSDP (``trainer`` given, several processes) the full state dict is
    gathered first with ``trainer.accelerator.get_state_dict``, a collective, and the main process saves it. DDP
    replicas are whole, so the main process saves its own. In a plain process: ``model.save_pretrained`` as always.
    """
    if trainer is not None and is_distributed() and shards_weights(trainer):
        state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
        if is_main_process():
            model.save_pretrained(out, state_dict=state, safe_serialization=True)
            tokenizer.save_pretrained(out)
        return
    if is_main_process():
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)


class RoundExporter(TrainerCallback):
    """At each round boundary (a checkpoint save), export the policy to ``run_dir/round_<k>/policy`` and call
    ``extra_export(round_dir)`` (R2M saves its reward head there).

    On several processes every rank calls both (``extra_export`` is called on every rank and writes from the main
    process only: its policy forwards must run everywhere under ZeRO-3 / FSDP); the main process alone writes and
    publishes the directory, and every rank waits for it. ``trainer`` (set by the runner once the trainer exists)
    gathers a sharded policy's state dict.
    """

    def __init__(
        self, run_dir: Path, steps_per_round: int, tokenizer, extra_export: Callable[[Path], None] | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.steps_per_round = steps_per_round
        self.tokenizer = tokenizer
        self.extra_export = extra_export
        self.trainer = None

    def on_save(self, args, state, control, model=None, **kwargs):
        self.export_round(model, state.global_step)

    def missing(self, step: int) -> bool:
        """Whether the round ending at ``step`` (a checkpoint's step) has no export: a kill after the checkpoint
        was saved and before its round was published (every rank gets the main process's answer)."""
        if step <= 0 or step % self.steps_per_round:
            return False
        done = (self.run_dir / f"round_{step // self.steps_per_round}" / "round.json").exists()
        return bool(broadcast_object(not done if is_main_process() else None))

    def export_round(self, model, step: int) -> None:
        """Export the policy ``model`` (and the method's state) as the round ending at ``step``."""
        k = step // self.steps_per_round
        out = self.run_dir / f"round_{k}"
        main = is_main_process()
        tmp = self.run_dir / f".round_{k}.tmp"
        if main:
            fresh_dir(tmp)
        export_policy(model, self.tokenizer, tmp / "policy", self.trainer)
        if self.extra_export is not None:
            self.extra_export(tmp)
        if main:
            (tmp / "round.json").write_text(json.dumps({"round": k, "step": step}))
            publish_dir(tmp, out)
        barrier()


def _fmt(value) -> str:
    """A bar's number: 2 decimals; anything else (None, NaN) as it is."""
    return f"{value:.2f}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


class ProgressBar(TrainerCallback):
    """One tqdm bar per run with the numbers people watch (proxy, gold, KL, words), instead of raw log dicts."""

    KEYS = (("proxy_reward", "proxy"), ("gold_score", "gold"), ("kl_to_ref", "kl"), ("completion_words", "words"))

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        if not is_main_process():  # one bar per run, not one per rank
            return
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.desc, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs:
            self.bar.set_postfix({short: _fmt(logs[k]) for k, short in self.KEYS if k in logs})

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
