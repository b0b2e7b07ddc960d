"""How the transfer variants compare: per iteration, TPO's win rate (ties half, with a bootstrap 95% CI) against
each baseline on the held-out prompts, judged both orders by the same judge; and how selection moved between the
candidates, as a plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from r2m.evaluation.compare import compare
from r2m.generation import generate
from r2m.judges.base import Judge
from r2m.prompts import render_prompts

WIN_KEYS = ("n_valid", "wins", "losses", "ties", "win_rate", "win_rate_ties_half", "ci_low", "ci_high")


def greedy_completions(policy_dir: Path, rows: Sequence[Mapping], policy_cfg, max_new_tokens: int) -> list[str]:
    """The policy's greedy completions of ``rows`` (the win rates' generations)."""
    from r2m.models.builders import load_causal_lm

    model, tok = load_causal_lm(policy_dir)
    return generate(model, tok, render_prompts(tok, [r["prompt"] for r in rows], policy_cfg), max_new_tokens)


def win_rates(
    judge: Judge, rows: list[dict], gens: Mapping[str, list[str]], method: str, baselines: Sequence[str]
) -> dict[str, dict]:
    """``method``'s win-rate report against each of ``baselines`` (same prompts, both orders)."""
    out = {}
    for b in baselines:
        report, _ = compare(judge, rows, gens[method], gens[b], f"{method}-vs-{b}", progress=False)
        out[b] = {k: report.get(k) for k in WIN_KEYS}
    return out


def plot_selection(selection: Mapping[int, Mapping[str, int]], candidates: Sequence[str], path: Path) -> Path:
    """Stacked bars: the share of each iteration's prompts each candidate collected (TPO's UCB choices)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = sorted(selection)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bottom = [0.0] * len(iterations)
    for c in candidates:
        share = [selection[i].get(c, 0) / max(1, sum(selection[i].values())) for i in iterations]
        ax.bar([str(i) for i in iterations], share, bottom=bottom, label=c)
        bottom = [b + s for b, s in zip(bottom, share, strict=True)]
    ax.set_xlabel("iteration")
    ax.set_ylabel("share of prompts collected")
    ax.set_title("TPO: where the collection went")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return path
