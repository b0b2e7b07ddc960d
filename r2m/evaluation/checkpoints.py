"""Which checkpoint of a run to ship: the final one, the best by the proxy RM, the best by the held-out RM, and the
gold-oracle best (which no real user has; it bounds what selection can recover).

ktolnos/Reward-Model-Overoptimization (BENCHMARK.md) measured that selecting by a held-out RM recovers most of the
oracle's gain while selecting by the training RM is about as bad as random; this module makes that choice for every
run so the evaluation reports all four side by side.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

CHOICES: dict[str, str | None] = {  # choice -> the round score it maximises (None: the last round)
    "final": None,
    "best_proxy": "proxy",
    "best_heldout": "heldout",
    "oracle": "gold",
}


def round_dirs(run_dir: Path) -> list[tuple[int, int, Path]]:
    """``(round, step, dir)`` of every exported round of a run, in order (``round_<k>/round.json``)."""
    found = []
    for f in Path(run_dir).glob("round_*/round.json"):
        info = json.loads(f.read_text())
        found.append((int(info["round"]), int(info["step"]), f.parent))
    return sorted(found)


def choose(rounds: Sequence[dict]) -> dict[str, int]:
    """Index into ``rounds`` (dicts with ``proxy``, ``heldout``, ``gold``) of each choice in :data:`CHOICES`; the
    earliest round wins a tie; a choice whose score is missing from any round is left out."""
    if not rounds:
        raise ValueError("choose: no rounds")
    out = {}
    for name, key in CHOICES.items():
        if key is None:
            out[name] = len(rounds) - 1
        elif all(key in r for r in rounds):
            out[name] = max(range(len(rounds)), key=lambda i: (rounds[i][key], -i))
    return out


def window_mean(rows: Sequence[dict], key: str, step: int, width: int) -> float | None:
    """Mean of ``key`` over the per-step rows with ``step - width < row.step <= step`` (None when there are none)."""
    vals = [r[key] for r in rows if key in r and step - width < r["step"] <= step]
    return sum(vals) / len(vals) if vals else None
