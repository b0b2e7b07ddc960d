"""The range of every numeric parameter, checked when a config loads (:func:`check_ranges`), before any stage runs or
writes anything. Every int / float field of :class:`r2m.config.Config` without ``choices`` has an entry here
(tests/unit/test_config_ranges.py checks that none is missing). Relations between parameters (rl.steps a multiple of
rl.rounds, ...) stay in :meth:`r2m.config.Config.validate`.

A range is ``"<lo-bracket><lo>,<hi><hi-bracket>"`` with ``[`` / ``]`` inclusive, ``(`` / ``)`` exclusive and an empty
bound unbounded: ``"[0,)"`` is ``>= 0``, ``"(0,)"`` is ``> 0``, ``"[0,0.5)"`` is ``0 <= x < 0.5``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

RANGES: dict[str, str] = {
    "seed": "[0,)",
    "threads": "[0,)",  # 0 = torch's default
    "data.n_sft": "[1,)",
    "data.n_rm_train": "[1,)",
    "data.n_rm_heldout": "[1,)",
    "data.n_rm_test": "[1,)",
    "data.n_rl_prompts": "[1,)",
    "data.n_eval_prompts": "[1,)",
    "tokenizer.vocab_size": "[8,)",
    "policy.hidden_size": "[1,)",
    "policy.num_layers": "[1,)",
    "policy.num_heads": "[1,)",
    "policy.max_positions": "[2,)",
    "policy.max_prompt_tokens": "[0,)",
    "sft.steps": "[0,)",
    "sft.batch_size": "[1,)",
    "sft.lr": "(0,)",
    "sft.warmup_steps": "[0,)",
    "sft.max_length": "[2,)",
    "preferences.label_noise": "[0,0.5)",
    "preferences.edit_fraction": "[0,1]",
    "preferences.heldout_seed_offset": "[1,)",
    "best_of_n.n_max": "[1,)",
    "best_of_n.n_prompts": "[1,)",
    "reward_model.epochs": "[0,)",
    "reward_model.batch_size": "[1,)",
    "reward_model.lr": "(0,)",
    "reward_model.max_length": "[2,)",
    "rl.steps": "[1,)",
    "rl.rounds": "[1,)",
    "rl.prompts_per_step": "[1,)",
    "rl.num_generations": "[2,)",
    "rl.max_completion_length": "[1,)",
    "rl.temperature": "(0,)",
    "rl.lr": "(0,)",
    "rl.beta": "[0,)",
    "rl.max_grad_norm": "[0,)",
    "rl.monitor_sample": "[0,)",
    "rl.monitor_every": "[1,)",
    "rl.max_nonfinite_steps": "[1,)",
    "rl.max_reward_scale": "(1,)",
    "rl.vllm_server_port": "[1,65535]",
    "rl.vllm_gpu_memory_utilization": "(0,1]",
    "rl.vllm_tensor_parallel_size": "[1,)",
    "r2m.omega_floor": "[0,1]",
    "r2m.alpha": "[0,1]",
    "r2m.attn_dim": "[0,)",
    "r2m.num_heads": "[1,)",
    "r2m.rm_lr": "(0,)",
    "r2m.rm_updates_per_step": "[1,)",
    "r2m.grad_clip": "(0,)",
    "r2m.gre_std_floor": "[0,)",
    "r2m.out_init_gain": "(0,)",
    "r2m.horizon": "[0,)",
    "r2m.attn_weight_decay": "[0,)",
    "r2m.replay_weight": "[0,)",
    "r2m.replay_pairs": "[1,)",
    "methods.kl.beta": "[0,)",
    "methods.par.n_refs": "[1,)",
    "methods.ensemble.k": "[2,)",
    "methods.ensemble.uwo_lambda": "[0,)",
    "methods.ensemble.warm_members": "[1,)",
    "methods.length_penalty.cache": "[0,)",
    "methods.length_penalty.weight": "[0,)",
    "methods.repetition_penalty.ngram": "[1,)",
    "methods.repetition_penalty.max_penalty": "(,0]",
    "evaluate.n_policy_pairs": "[0,)",
    "evaluate.max_new_tokens": "[1,)",
    "judge.timeout_s": "(0,)",
    "judge.max_retries": "[0,)",
    "judge.backoff_s": "[0,)",
    "judge.concurrency": "[1,)",
    "judge.max_tokens": "[1,)",
    "judge.temperature": "[0,)",
    "judge.usd_per_1m_prompt_tokens": "[0,)",
    "judge.usd_per_1m_completion_tokens": "[0,)",
    "judge.local_batch_size": "[1,)",
    "judge.max_items": "[0,)",
    "analysis.n_pairs": "[2,)",
    "analysis.batch_size": "[1,)",
    "analysis.n_permutations": "[1,)",
    "promote.confidence": "(0,1)",
    "promote.margin": "[0,)",
    "promote.policy_min_win_rate": "[0,1]",
    "promote.min_accuracy": "[0,1]",
    "promote.max_ece": "[0,1]",
    "promote.ece_tolerance": "[0,)",
    "promote.n_bootstrap": "[1,)",
    "transfer.iterations": "[1,)",
    "transfer.prompts_per_iteration": "[1,)",
    "transfer.k": "[2,)",
    "transfer.n_extra": "[0,)",
    "transfer.replace": "[0,)",
    "transfer.refresh_every": "[1,)",
    "transfer.ucb_coef": "[0,)",
    "transfer.bar": "[0,1]",
    "transfer.budget": "[0,)",
    "transfer.beta": "(0,)",
    "transfer.lr": "(0,)",
    "transfer.epochs": "[1,)",
    "transfer.batch_size": "[1,)",
    "transfer.max_new_tokens": "[1,)",
    "transfer.temperature": "(0,)",
    "transfer.n_eval": "[1,)",
}


def numeric_fields(cfg: Any, prefix: str = "") -> Iterator[tuple[str, Any, dataclasses.Field]]:
    """``(dotted key, value, field)`` of every int / float field of ``cfg`` (a dataclass tree), bools excluded."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from numeric_fields(value, f"{prefix}{f.name}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield f"{prefix}{f.name}", value, f


def in_range(value: float, spec: str) -> bool:
    """Whether ``value`` lies in the range ``spec`` (module docstring); NaN never does."""
    if isinstance(value, float) and math.isnan(value):
        return False
    lo_open, hi_open = spec[0] == "(", spec[-1] == ")"
    lo, hi = spec[1:-1].split(",")
    if lo and (value <= float(lo) if lo_open else value < float(lo)):
        return False
    return not (hi and (value >= float(hi) if hi_open else value > float(hi)))


def describe(spec: str) -> str:
    """``"[0,)"`` -> ``">= 0"``, ``"[0,0.5)"`` -> ``"in [0, 0.5)"``."""
    lo, hi = spec[1:-1].split(",")
    if lo and not hi:
        return f"{'>' if spec[0] == '(' else '>='} {lo}"
    if hi and not lo:
        return f"{'<' if spec[-1] == ')' else '<='} {hi}"
    return f"in {spec[0]}{lo}, {hi}{spec[-1]}"


def check_ranges(cfg: Any, error: type[Exception]) -> None:
    """Raise ``error("param <key>: must be ..., got <value>")`` for the first numeric field outside its range."""
    for key, value, _ in numeric_fields(cfg):
        spec = RANGES.get(key)
        if spec is not None and not in_range(value, spec):
            raise error(f"param {key}: must be {describe(spec)}, got {value!r}")
