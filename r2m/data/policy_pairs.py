"""Preference pairs of the policy's own samples, labelled by the gold judge (Gao et al. 2022; Coste et al. 2024).

Each prompt gets two samples of the SFT policy; the gold judge orders them and a ``label_noise`` share of the labels
is flipped (annotator noise). Pairs the judge scores equal carry no preference and are dropped. A share
``edit_fraction`` of the posts can instead give an edit pair of the reference summary
(:func:`r2m.data.preferences.make_preference_pairs`), the earlier design's data.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from r2m.data.gold import GoldJudge
from r2m.data.preferences import make_preference_pairs
from r2m.data.task import Post


def label_pairs(
    rows: Sequence[dict],
    samples: Sequence[tuple[str, str]],
    gold: Sequence[tuple[float, float]],
    label_noise: float,
    seed: int,
) -> tuple[list[dict[str, Any]], int]:
    """Gold-labelled pairs from two samples per prompt.

    Args:
        rows: prompt rows (``id``, ``post_id``, ``prompt``), one per pair.
        samples: ``(a, b)`` completions per row.
        gold: ``(gold(a), gold(b))`` per row.
        label_noise: probability that a label is flipped against the gold ordering.
        seed: seed of the flips.

    Returns:
        (pairs, ties dropped). ``gold_margin`` is gold(chosen) - gold(rejected) (negative for a flipped label);
        ``label_agrees_with_gold`` is ``gold_margin > 0``.
    """
    if not 0.0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5), got {label_noise}")
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    ties = 0
    for row, (a, b), (ga, gb) in zip(rows, samples, gold, strict=True):
        flip = rng.random() < label_noise  # drawn for every row, so the flips do not depend on which pairs tie
        if ga == gb:
            ties += 1
            continue
        (chosen, gc), (rejected, gr) = ((a, ga), (b, gb)) if ga > gb else ((b, gb), (a, ga))
        if flip:
            (chosen, gc), (rejected, gr) = (rejected, gr), (chosen, gc)
        out.append(
            {
                "id": row["id"],
                "post_id": row["post_id"],
                "prompt": row["prompt"],
                "chosen": chosen,
                "rejected": rejected,
                "chosen_kind": "policy",
                "rejected_kind": "policy",
                "gold_margin": gc - gr,
                "label_agrees_with_gold": gc > gr,
            }
        )
    return out, ties


def edit_posts(rows: Sequence[dict], edit_fraction: float, seed: int) -> set[str]:
    """The ids of the rows (``round(edit_fraction * len(rows))`` of them, drawn by ``seed``) that get edit pairs."""
    k = round(edit_fraction * len(rows))
    return {r["id"] for r in random.Random(seed).sample(list(rows), k)} if k else set()


def mixed_pairs(
    rows: Sequence[dict],
    posts: dict[str, Post],
    samples: Sequence[tuple[str, str]],
    gold: Sequence[tuple[float, float]],
    label_noise: float,
    edit_fraction: float,
    seed: int,
) -> tuple[list[dict[str, Any]], int]:
    """:func:`label_pairs` for most rows, edit pairs for an ``edit_fraction`` of them; in the rows' order."""
    edits = edit_posts(rows, edit_fraction, seed)
    policy_idx = [i for i, r in enumerate(rows) if r["id"] not in edits]
    pairs, ties = label_pairs(
        [rows[i] for i in policy_idx],
        [samples[i] for i in policy_idx],
        [gold[i] for i in policy_idx],
        label_noise,
        seed,
    )
    by_id = {p["id"]: p for p in pairs}
    if edits:
        edit_rows = [r for r in rows if r["id"] in edits]
        made = make_preference_pairs([posts[r["post_id"]] for r in edit_rows], seed=seed + 1, judge=GoldJudge())
        by_id.update({r["id"]: {**p, "id": r["id"]} for r, p in zip(edit_rows, made, strict=True)})
    return [by_id[r["id"]] for r in rows if r["id"] in by_id], ties
