"""Plots of the hidden-state analysis (:mod:`r2m.evaluation.hidden_states`), PNG on matplotlib's Agg canvas.

- :func:`plot_label_similarity`: per layer, mean cosine within a label vs across labels, and their gap, one colour
  per policy (the SFT policy and each RL run's final policy);
- :func:`plot_similarity_vs_reward`: each pair's cos(h_chosen, h_rejected) against |reward difference| at one layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from r2m.evaluation.plots import save_figure


def plot_label_similarity(per_policy: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path) -> Path:
    """Two panels over layers: within-label (solid) and across-label (dashed) mean cosine; the gap within - across.

    Args:
        per_policy: ``{policy: {"layer": [L ints], "within": [L], "across": [L], "gap": [L]}}``.
        path: the PNG to write.
    """
    if not per_policy:
        raise ValueError("plot_label_similarity: no policy to plot")
    fig = Figure(figsize=(11.0, 4.2))
    ax_sim, ax_gap = fig.subplots(1, 2)
    layers = sorted({int(layer) for s in per_policy.values() for layer in s["layer"]})
    for i, (name, s) in enumerate(per_policy.items()):
        colour = f"C{i % 10}"
        ax_sim.plot(s["layer"], s["within"], color=colour, marker="o", label=f"{name}: within label")
        ax_sim.plot(s["layer"], s["across"], color=colour, marker="x", linestyle="--", label=f"{name}: across labels")
        ax_gap.plot(s["layer"], s["gap"], color=colour, marker="o", label=name)
    ax_sim.set_ylabel("mean cosine similarity")
    ax_gap.set_ylabel("gap (within - across)")
    ax_gap.axhline(0.0, color="grey", linewidth=0.8)
    for ax in (ax_sim, ax_gap):
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_xticks(layers)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Mean-pooled response hidden states: chosen vs rejected")
    return save_figure(fig, path)


def plot_similarity_vs_reward(
    points: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    layer: int,
    spearman: Mapping[str, float] | None = None,
) -> Path:
    """Scatter of cos(h_chosen_i, h_rejected_i) (y) against |r_chosen_i - r_rejected_i| (x), one colour per policy.

    Args:
        points: ``{policy: (abs_reward_diff [N], pair_cosine [N])}``.
        path: the PNG to write.
        layer: the ``hidden_states`` index the cosines come from (for the title).
        spearman: optional ``{policy: rho}`` shown in the legend.
    """
    if not points:
        raise ValueError("plot_similarity_vs_reward: no policy to plot")
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.subplots()
    for i, (name, (diff, cos)) in enumerate(points.items()):
        rho = (spearman or {}).get(name)
        label = name if rho is None or not np.isfinite(rho) else f"{name} (Spearman {rho:+.2f})"
        ax.scatter(np.asarray(diff), np.asarray(cos), s=14, alpha=0.6, color=f"C{i % 10}", label=label)
    ax.set_xlabel("|reward difference| (vanilla RM)")
    ax.set_ylabel("cos(h_chosen, h_rejected)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"Pair similarity vs reward difference, layer {layer}")
    return save_figure(fig, path)
