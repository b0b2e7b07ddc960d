"""The hidden-state analysis run on checkpoints: which policies to analyse, their per-layer statistics on RM-test pairs
and the vanilla reward the statistics are correlated with (the maths is :mod:`r2m.evaluation.hidden_states`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from r2m.config import Config
from r2m.evaluation.hidden_states import (
    label_gap_permutation_test,
    label_similarity,
    pair_cosine,
    pooled_response_states,
    resolve_layers,
    similarity_reward_correlation,
)
from r2m.models.builders import load_causal_lm
from r2m.models.reward_model import RewardModel
from r2m.paths import Paths
from r2m.prompts import render_prompts


def policy_dirs(cfg: Config, paths: Paths) -> tuple[dict[str, Path], list[str]]:
    """``({"sft": models/sft, "<run>": models/rl/<run>/final/policy, ...}, runs without a final policy)``."""
    found, missing = {"sft": paths.sft}, []
    for run in cfg.run_names():
        d = paths.rl_run(run) / "final" / "policy"
        if d.exists():
            found[run] = d
        else:
            missing.append(run)
    return found, missing


def vanilla_rewards(cfg: Config, paths: Paths, rows: list[dict]) -> tuple[Tensor, Tensor]:
    """Vanilla RM rewards [N] of plain prompt + chosen and of plain prompt + rejected."""
    rm = RewardModel.load(paths.rm)

    def score(key: str) -> Tensor:
        texts = [r["prompt"] + r[key] for r in rows]
        return rm.score_texts(texts, batch_size=cfg.analysis.batch_size, max_length=cfg.reward_model.max_length)

    return score("chosen"), score("rejected")


def analyse_policy(
    policy_dir: Path, cfg: Config, rows: list[dict], rewards: tuple[Tensor, Tensor]
) -> tuple[dict[int, dict[str, float]], Tensor]:
    """Per-layer statistics ``{layer: {"within": ..., "gap": ..., "pair_spearman": ..., ...}}`` of one policy, and
    the pair cosines [L, N] (for the scatter plot)."""
    model, tok = load_causal_lm(policy_dir)
    layers = resolve_layers(cfg.analysis.layers, int(model.config.num_hidden_layers))
    prompts = render_prompts(tok, [r["prompt"] for r in rows], cfg.policy)
    chosen, rejected = pooled_response_states(
        model,
        tok,
        prompts,
        [[r["chosen"] for r in rows], [r["rejected"] for r in rows]],
        layers,
        batch_size=cfg.analysis.batch_size,
        max_length=cfg.reward_model.max_length,  # the prompt + response budget the reward model scores
    )  # [L, N, H] each
    stats = {**label_similarity(chosen, rejected), **similarity_reward_correlation(chosen, rejected, *rewards)}
    if cfg.analysis.n_permutations:
        gen = torch.Generator().manual_seed(cfg.seed)
        stats |= label_gap_permutation_test(chosen, rejected, cfg.analysis.n_permutations, gen)
    per_layer = {layer: {k: float(v[j]) for k, v in stats.items()} for j, layer in enumerate(layers)}
    return per_layer, pair_cosine(chosen, rejected)
