"""Training-curve plots (PNG) for proxy reward, gold score, KL and length.

Uses matplotlib's object API with the Agg canvas, so it never touches pyplot's global
state or the interactive backend. Each function takes ``runs = {label: rows}`` where
rows are per-step dicts; rows missing a key (or holding None/NaN) are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Runs = Mapping[str, Sequence[Mapping[str, Any]]]


def _usable(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def series(rows: Sequence[Mapping[str, Any]], x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) arrays from rows that have finite numeric values for both keys."""
    pairs = [(float(r[x_key]), float(r[y_key])) for r in rows if _usable(r.get(x_key)) and _usable(r.get(y_key))]
    if not pairs:
        return np.empty(0), np.empty(0)
    xy = np.asarray(pairs)
    return xy[:, 0], xy[:, 1]


def step_moving_average(steps: np.ndarray, values: np.ndarray, at: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over steps rather than values: at each step ``a`` of ``at`` [M], the mean of the
    ``values`` [N] whose step lies in ``[a - window // 2, a - window // 2 + window)`` (NaN where none). On values at
    every step 0..N-1 and ``at`` = those steps it equals :func:`moving_average`; on a key measured every k-th step
    (the KL) its window still spans ``window`` steps."""
    s = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    csum = np.cumsum(np.insert(v, 0, 0.0))
    start = np.asarray(at, dtype=float) - int(window) // 2
    lo = np.searchsorted(s, start, side="left")
    hi = np.searchsorted(s, start + max(1, int(window)), side="left")
    n = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (csum[hi] - csum[lo]) / np.maximum(n, 1), np.nan)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of the same length (no lag; windows shrink at the edges).

    Point ``i`` averages ``values[i - window // 2 : i - window // 2 + window]`` clipped to the array.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return values
    window = max(1, min(int(window), values.size))
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(values.size)
    start = idx - window // 2
    end = np.clip(start + window, 0, values.size)
    start = np.clip(start, 0, values.size)
    return (csum[end] - csum[start]) / (end - start)


def _window(n: int, smooth: int | None) -> int:
    return max(1, n // 10) if smooth is None else max(1, smooth)


def _draw(ax: Axes, runs: Runs, x_key: str, y_key: str, smooth: int | None, smooth_x: bool = False) -> int:
    """Draw one panel: raw faint line + smoothed line per run. Returns the number of runs drawn."""
    drawn = 0
    for i, (label, rows) in enumerate(runs.items()):
        x, y = series(rows, x_key, y_key)
        if x.size == 0:
            continue
        colour = f"C{i % 10}"
        w = _window(x.size, smooth)
        ax.plot(x, y, color=colour, alpha=0.25, linewidth=0.8)
        xs = moving_average(x, w) if smooth_x else x
        ax.plot(xs, moving_average(y, w), color=colour, linewidth=1.8, label=str(label))
        drawn += 1
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, f"no '{y_key}' data", ha="center", va="center", transform=ax.transAxes)
    return drawn


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Lay out ``fig`` and write it as a PNG (parent folders created)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=120)
    return out


def _panels(
    runs: Runs,
    path: str | Path,
    x_key: str,
    y_keys: Sequence[str],
    title: str,
    smooth: int | None,
    smooth_x: bool = False,
) -> Path:
    fig = Figure(figsize=(6.0 * len(y_keys), 4.2))
    axes = fig.subplots(1, len(y_keys), squeeze=False)[0]
    total = sum(_draw(ax, runs, x_key, key, smooth, smooth_x) for ax, key in zip(axes, y_keys, strict=True))
    if total == 0:
        raise ValueError(f"{title}: no run has a row with '{x_key}' and any of {list(y_keys)}")
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_proxy_vs_gold(runs: Runs, path: str | Path, smooth: int | None = None) -> Path:
    """Two panels: proxy reward per step and gold score per step, one colour per run.

    ``smooth`` is the moving-average window (default: a tenth of each run's points).
    """
    return _panels(runs, path, "step", ["proxy_reward", "gold_score"], "Proxy reward vs gold score", smooth)


def plot_gold_vs_kl(runs: Runs, path: str | Path, smooth: int | None = None) -> Path:
    """Gold score and proxy reward against sqrt(KL to the reference policy), the over-optimisation curve of Gao et
    al. (2022), one colour per run. Rows need ``sqrt_kl``."""
    return _panels(
        runs, path, "sqrt_kl", ["gold_score", "proxy_reward"], "Gold and proxy vs sqrt(KL)", smooth, smooth_x=True
    )


def plot_length(runs: Runs, path: str | Path, smooth: int | None = None) -> Path:
    """Completion length per step, plus ``repeated_trigrams`` per step in a second panel if any row has it."""
    keys = ["completion_length"]
    if any(_usable(r.get("repeated_trigrams")) for rows in runs.values() for r in rows):
        keys.append("repeated_trigrams")
    return _panels(runs, path, "step", keys, "Completion length", smooth)
