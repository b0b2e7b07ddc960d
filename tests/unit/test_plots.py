"""Tests for the training-curve plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from r2m.evaluation.plots import (
    moving_average,
    plot_gold_vs_kl,
    plot_length,
    plot_proxy_vs_gold,
    step_moving_average,
)


def _rows(n: int, offset: float) -> list[dict]:
    rows = [
        {
            "step": s,
            "proxy_reward": offset + 0.1 * s,
            "gold_score": offset + math.sin(s / 5),
            "sqrt_kl": (0.05 * s) ** 0.5,
            "completion_length": 40 + s,
        }
        for s in range(n)
    ]
    rows[3].pop("gold_score")  # skipped, not fatal
    rows[4]["sqrt_kl"] = None
    return rows


RUNS = {"r2m": _rows(30, 0.0), "baseline": _rows(25, 1.0)}


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:4] == b"\x89PNG"


def test_plots_write_pngs(tmp_path: Path) -> None:
    assert _is_png(plot_proxy_vs_gold(RUNS, tmp_path / "a" / "proxy_gold.png"))
    assert _is_png(plot_gold_vs_kl(RUNS, tmp_path / "kl.png"))
    assert _is_png(plot_length(RUNS, tmp_path / "len.png"))
    with_trigrams = {"r": [dict(r, repeated_trigrams=0.01 * r["step"]) for r in _rows(10, 0.0)]}
    assert _is_png(plot_length(with_trigrams, str(tmp_path / "len2.png")))


def test_plots_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no run"):
        plot_gold_vs_kl({"r": [{"step": 1, "gold_score": 1.0}]}, tmp_path / "x.png")
    with pytest.raises(ValueError):
        plot_length({}, tmp_path / "y.png")
    with pytest.raises(ValueError):
        plot_proxy_vs_gold({"r": [{"step": 1}], "s": []}, tmp_path / "z.png")
    assert not any(tmp_path.iterdir())


def test_step_moving_average_spans_steps_not_values() -> None:
    v = np.array([0.0, 3.0, 0.0, 3.0, 0.0])
    dense = step_moving_average(np.arange(5), v, np.arange(5), 3)
    np.testing.assert_array_equal(dense, moving_average(v, 3))  # every step measured: the same numbers
    # measured on steps 0, 4, 8 (values 1, 2, 3): a 5-step window at step 4 holds steps 2..6, so only step 4
    sparse = step_moving_average(np.array([0, 4, 8]), np.array([1.0, 2.0, 3.0]), np.array([0, 4, 8, 6]), 5)
    np.testing.assert_allclose(sparse, [1.0, 2.0, 3.0, 2.5])  # at 6: steps 4..8
    assert np.isnan(step_moving_average(np.array([0]), np.array([1.0]), np.array([10]), 3)).all()


def test_moving_average() -> None:
    np.testing.assert_allclose(moving_average(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1.0, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(moving_average(np.array([0.0, 3.0, 0.0, 3.0, 0.0]), 3), [1.5, 1.0, 2.0, 1.0, 1.5])
    assert moving_average(np.empty(0), 3).size == 0
