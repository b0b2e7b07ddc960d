"""omega(t) = max(0.5 cos(pi t / T) + 0.5, Omega) with hand-computed values."""

import math

import pytest

from r2m.schedule import floor_step, omega


def test_starts_at_one():
    assert omega(0, 100, 0.6) == 1.0
    assert omega(0, 100, 0.0) == 1.0


def test_ends_at_floor():
    assert omega(100, 100, 0.6) == 0.6
    assert omega(100, 100, 0.0) == pytest.approx(0.0, abs=1e-12)


def test_half_way_is_half_or_floor():
    assert omega(50, 100, 0.3) == pytest.approx(0.5)
    assert omega(50, 100, 0.6) == 0.6
    assert omega(50, 100, 0.0) == pytest.approx(max(0.5, 0.0))


def test_quarter_way_hand_value():
    assert omega(25, 100, 0.0) == pytest.approx(0.5 * math.cos(math.pi / 4) + 0.5)


def test_floor_reached_exactly_at_arccos():
    T, floor = 1000, 0.6
    t_floor = floor_step(T, floor)
    assert t_floor / T == pytest.approx(math.acos(0.2) / math.pi)
    assert t_floor / T == pytest.approx(0.436, abs=1e-3)

    assert omega(math.floor(t_floor), T, floor) > floor  # step 436: still on the cosine
    assert omega(t_floor - 1e-6, T, floor) > floor
    assert omega(t_floor, T, floor) == pytest.approx(floor, abs=1e-12)
    assert all(omega(t, T, floor) == floor for t in range(math.ceil(t_floor), T + 1))


def test_floor_step_edges():
    assert floor_step(100, 1.0) == 0.0  # omega is 1 throughout
    assert floor_step(100, 0.0) == pytest.approx(100.0)  # the cosine runs to the end
    assert all(omega(t, 100, 1.0) == 1.0 for t in range(101))


def test_monotone_non_increasing():
    values = [omega(t, 50, 0.7) for t in range(51)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_step_clamped():
    assert omega(-5, 100, 0.6) == 1.0
    assert omega(500, 100, 0.6) == 0.6


@pytest.mark.parametrize("total_steps, floor", [(0, 0.6), (-3, 0.6), (100, -0.1), (100, 1.1)])
def test_invalid_args_raise(total_steps, floor):
    with pytest.raises(ValueError):
        omega(0, total_steps, floor)
    with pytest.raises(ValueError):
        floor_step(total_steps, floor)
