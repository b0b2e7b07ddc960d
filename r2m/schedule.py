"""Time-step weight omega(t) on the original reward token embedding (docs/method.md).

    omega(t) = max(0.5 * cos(pi * t / T) + 0.5, Omega)        H_fin = (1 - omega) * Hhat + omega * H

omega starts at 1 (pure vanilla RM) and decays along a half cosine until it reaches the floor Omega, which
happens at t / T = arccos(2 * Omega - 1) / pi (0.436 for Omega = 0.6), and stays there.
"""

from __future__ import annotations

import math

__all__ = ["omega", "floor_step"]


def _check(total_steps: int, floor: float) -> None:
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must lie in [0, 1], got {floor}")


def omega(step: int, total_steps: int, floor: float) -> float:
    """omega(t) = max(0.5 cos(pi t / T) + 0.5, floor), with t clamped to [0, T].

    Args:
        step: RL step t (values outside [0, T] are clamped, so evaluation past the end gives the floor).
        total_steps: T, the total number of RL steps (> 0).
        floor: Omega in [0, 1] (paper: 0.6 or 0.7).
    """
    _check(total_steps, floor)
    t = min(max(step, 0), total_steps)
    return max(0.5 * math.cos(math.pi * t / total_steps) + 0.5, floor)


def floor_step(total_steps: int, floor: float) -> float:
    """The (fractional) step at which omega first reaches the floor: T * arccos(2 Omega - 1) / pi."""
    _check(total_steps, floor)
    return total_steps * math.acos(2.0 * floor - 1.0) / math.pi
