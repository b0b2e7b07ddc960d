"""Online RL in rounds with TRL's GRPO or RLOO: build the trainer, checkpoint every round, resume after a crash.

Layout of one run (``<models>/rl/<algo>-<method>/``)::

    run_config.json        fingerprint of everything the run depends on (resume only if it matches)
    checkpoints/           TRL/HF checkpoint of the last finished round (optimizer, RNG, step) for resume
    round_<k>/policy/      the policy after round k (safetensors), plus round.json (and R2M's reward head)
    metrics.jsonl          one row per optimiser step (TRL's logs + proxy / gold / KL / length / repetition)
    final/policy/          the policy after the last step
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PrinterCallback, TrainerCallback

from r2m.config import Config
from r2m.rl.callbacks import (
    CheckpointScrubber,
    MetricsRecorder,
    ProgressBar,
    RoundExporter,
    fresh_dir,
    publish_dir,
    read_rows,
)
from r2m.rl.reward import RewardFunction
from r2m.rl.variants import ALGOS

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
# the per-step metrics a run is judged by (summarised as initial / final / max)
SUMMARY_KEYS = (
    "proxy_reward",
    "heldout_reward",
    "train_reward",
    "gold_score",
    "kl_to_ref",
    "completion_words",
    "repeated_trigrams",
    "distinct_ratio",
    "train_group_std",
)


def policy_device() -> torch.device:
    """Where TRL puts the policy (its accelerator's device): every model of the run goes there too."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def trl_config(algo: str, cfg: Config, output_dir: Path, beta: float | None = None):
    """The TRL config for ``algo`` on this machine (TRL's CPU flags on a machine without a GPU); ``beta``: TRL's KL
    coefficient (default ``rl.beta``; the ``kl`` method's is ``methods.kl.beta``)."""
    from trl import GRPOConfig, RLOOConfig

    if algo not in ALGOS:
        raise ValueError(f"unknown RL algorithm {algo!r}; valid: {', '.join(ALGOS)}")
    rl = cfg.rl
    on_cpu = policy_device().type == "cpu"
    if rl.bf16 and on_cpu:
        raise ValueError("rl.bf16: bf16 mixed precision needs a CUDA device; this machine has none")
    steps_per_round = rl.steps // rl.rounds
    common = dict(
        output_dir=str(output_dir),
        max_steps=rl.steps,
        per_device_train_batch_size=rl.prompts_per_step * rl.num_generations,
        num_generations=rl.num_generations,
        max_completion_length=rl.max_completion_length,
        temperature=rl.temperature,
        learning_rate=rl.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=rl.beta if beta is None else beta,
        max_grad_norm=rl.max_grad_norm,
        logging_steps=1,
        save_strategy="steps",
        save_steps=steps_per_round,
        save_total_limit=1,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        use_cpu=on_cpu,
        bf16=rl.bf16,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        disable_tqdm=True,  # r2m.rl.callbacks.ProgressBar shows one bar with the key metrics instead
    )
    args = {"grpo": GRPOConfig, "rloo": RLOOConfig}[algo](**common)
    # one generation batch per optimiser step, optimised once: the reward function's monitor (feedback captured from
    # the rollout, KL) and R2M's update after every step rely on it
    passes = (args.num_iterations, args.steps_per_generation, args.gradient_accumulation_steps)
    if passes != (1, 1, 1):
        raise ValueError(
            f"num_iterations, steps_per_generation and gradient_accumulation_steps must be 1, got {passes}: "
            "R2M updates once per generation batch"
        )
    return args


def trainer_class(algo: str):
    from trl import GRPOTrainer, RLOOTrainer

    return {"grpo": GRPOTrainer, "rloo": RLOOTrainer}[algo]


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The checkpoint with the highest step under ``ckpt_dir`` (None when there is none)."""
    if not ckpt_dir.exists():
        return None
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := CKPT_RE.match(p.name)) and p.is_dir()]
    return max(found)[1] if found else None


def checkpoint_step(ckpt: Path | None) -> int:
    return int(CKPT_RE.match(ckpt.name).group(1)) if ckpt is not None else 0


@dataclass
class RunSpec:
    """Everything one RL run needs, resolved by the stage."""

    algo: str
    method: str
    run_dir: Path
    policy_dir: Path  # the SFT reference (start of RL and KL anchor)
    prompts: Sequence[
        dict
    ]  # rows with "prompt" (plain task prompt), "policy_prompt" (as the policy sees it), "post_id"
    fingerprint: dict
    callbacks: list[TrainerCallback] = field(default_factory=list)
    extra_export: Callable[[Path], None] | None = None  # writes method-specific files into round/final dirs
    on_resume: Callable[[Path], None] | None = None  # restores method-specific state from a checkpoint
    extra_metrics: list[Callable[[], dict]] = field(default_factory=list)
    # per-step wall-clock/memory rows; outside the runs directory, which holds only reproducible files
    timings_file: Path | None = None  # default: <runs>.timings/<run>.jsonl
    beta: float | None = None  # TRL's KL coefficient (None: rl.beta)

    @property
    def timings(self) -> Path:
        runs = self.run_dir.parent
        return self.timings_file or runs.with_name(f"{runs.name}.timings") / f"{self.run_dir.name}.jsonl"


def stale_dir(run_dir: Path) -> Path:
    """Where :func:`prepare_run_dir` moves an outdated ``run_dir``: ``<runs>.stale/<run>-<time>``."""
    return run_dir.parent.with_name(f"{run_dir.parent.name}.stale") / f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(spec: RunSpec) -> tuple[Path | None, bool]:
    """Check the run directory against the fingerprint.

    Returns (checkpoint to resume from, already finished). A directory left by a run with a different
    fingerprint is moved aside to ``<runs>.stale/<run>-<time>`` (beside the runs directory, so that what depends on
    the runs directory never sees it), never overwritten.
    """
    run_dir = spec.run_dir
    cfg_file = run_dir / "run_config.json"
    if run_dir.exists() and any(run_dir.iterdir()):
        old = json.loads(cfg_file.read_text()) if cfg_file.exists() else None
        if old != spec.fingerprint:
            stale = stale_dir(run_dir)
            stale.parent.mkdir(parents=True, exist_ok=True)
            log.warning("%s was produced with another configuration; moved it to %s", run_dir, stale)
            run_dir.rename(stale)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_file.write_text(json.dumps(spec.fingerprint, indent=2, sort_keys=True))
    done = (run_dir / "final" / "policy" / "config.json").exists()
    return latest_checkpoint(run_dir / "checkpoints"), done


def load_checkpoint_weights(model: torch.nn.Module, ckpt: Path) -> None:
    """Load a checkpoint's policy weights into ``model`` exactly (strict).

    transformers' Trainer resumes with a raw ``load_state_dict(strict=False)`` of the saved file, which silently
    skips every weight that the model renames on load (GPT-NeoX's ``embed_out`` is saved under its checkpoint name
    and loaded as ``lm_head``): the resumed run would continue with the SFT output head. ``from_pretrained`` applies
    the renaming; the trainer's own load afterwards rewrites the other weights with the same values.
    """
    loaded = type(model).from_pretrained(str(ckpt), use_safetensors=True)
    model.load_state_dict(loaded.state_dict(), strict=True)


def train_rounds(spec: RunSpec, cfg: Config, reward_fn: RewardFunction, tokenizer, progress: bool = True) -> dict:
    """Run (or resume) RL until ``cfg.rl.steps``; returns ``{"resumed_from": step, "skipped": bool}``."""
    ckpt, done = prepare_run_dir(spec)
    if done:
        log.info("%s already finished; nothing to do", spec.run_dir)
        return {"resumed_from": cfg.rl.steps, "skipped": True}
    start = checkpoint_step(ckpt)
    if ckpt is not None:
        log.info("resuming %s from %s (step %d)", spec.run_dir.name, ckpt.name, start)
        if spec.on_resume is not None:
            spec.on_resume(ckpt)
    steps_per_round = cfg.rl.steps // cfg.rl.rounds
    callbacks = [
        MetricsRecorder(spec.run_dir, spec.timings, resume_step=start, extras=spec.extra_metrics),
        CheckpointScrubber(),
        RoundExporter(spec.run_dir, steps_per_round, tokenizer, spec.extra_export),
        *([ProgressBar(f"rl {spec.run_dir.name}")] if progress else []),
        *spec.callbacks,
    ]
    dataset = Dataset.from_list(
        [
            {
                "prompt": r.get("policy_prompt", r["prompt"]),
                "rm_prompt": r["prompt"],
                "post_id": r.get("post_id", r["id"]),
            }
            for r in spec.prompts
        ]
    )
    trainer = trainer_class(spec.algo)(
        model=str(spec.policy_dir),
        reward_funcs=[reward_fn],
        args=trl_config(spec.algo, cfg, spec.run_dir / "checkpoints", beta=spec.beta),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # raw log dicts every step; ProgressBar + metrics.jsonl replace them
    reward_fn.monitor.attach(trainer.model)
    if ckpt is not None:
        load_checkpoint_weights(trainer.model, ckpt)
    trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
    tmp = fresh_dir(spec.run_dir / ".final.tmp")
    last_round = spec.run_dir / f"round_{cfg.rl.rounds}"
    if (last_round / "round.json").exists():  # steps are a multiple of rounds: the last round IS the final state
        shutil.copytree(last_round, tmp)
    else:
        trainer.model.save_pretrained(tmp / "policy", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "policy")
        if spec.extra_export is not None:
            spec.extra_export(tmp)
    publish_dir(tmp, spec.run_dir / "final")
    return {"resumed_from": start, "skipped": False}


def summarise(rows: Sequence[dict], tail_frac: float = 0.1) -> dict:
    """Summary of a run's per-step rows: initial / final (mean of the last ``tail_frac`` of steps) / peak."""
    if not rows:
        return {}
    n_tail = max(1, int(len(rows) * tail_frac))
    first, last = min(r["step"] for r in rows), max(r["step"] for r in rows)
    out: dict = {"steps": len(rows)}
    for key in SUMMARY_KEYS:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if not pts:
            continue
        # windows of steps, not of values: the monitor's keys (KL, held-out RM) exist on every rl.monitor_every-th
        # step only, including the first and the last
        for name, vals in (
            ("initial", [v for s, v in pts if s < first + n_tail]),
            ("final", [v for s, v in pts if s > last - n_tail]),
        ):
            if vals:
                out[f"{key}_{name}"] = sum(vals) / len(vals)
        out[f"{key}_max"] = max(v for _, v in pts)
    gold = [(r["gold_score"], r["step"]) for r in rows if "gold_score" in r]
    if gold:
        # peak of a 10-step moving average: where over-optimisation started
        w = max(1, min(10, len(gold) // 4))
        ma = [sum(g for g, _ in gold[i : i + w]) / w for i in range(len(gold) - w + 1)]
        i = max(range(len(ma)), key=ma.__getitem__)
        out["gold_peak_ma"] = ma[i]
        out["gold_peak_step"] = gold[i + w // 2][1]
        # the KL over the same window (measured on rl.monitor_sample rollouts of every rl.monitor_every-th step)
        window = {s for _, s in gold[i : i + w]}
        kl = [r["kl_to_ref"] for r in rows if "kl_to_ref" in r and r["step"] in window]
        if kl:
            out["kl_at_gold_peak"] = sum(kl) / len(kl)
    return out


def summarise_timings(rows: Sequence[dict]) -> dict:
    """Wall-clock and memory of a run from its timing rows: mean seconds per step (R2M's update included), mean
    seconds of the R2M update alone, peak resident memory."""
    out: dict = {}
    for key, name in (("step_time_s", "seconds_per_step"), ("r2m_update_s", "r2m_update_seconds")):
        vals = [r[key] for r in rows if key in r]
        if vals:
            out[name] = sum(vals) / len(vals)
    rss = [r["rss_gb"] for r in rows if "rss_gb" in r]
    if rss:
        out["peak_rss_gb"] = max(rss)
    return out


def load_rows(run_dir: Path) -> list[dict]:
    return read_rows(Path(run_dir) / "metrics.jsonl")
