"""Gold-labelled pairs of policy samples (label noise, ties, edit mix) and the checkpoint choices."""

from __future__ import annotations

import pytest

from r2m.data.policy_pairs import edit_posts, label_pairs, mixed_pairs
from r2m.data.task import generate_posts
from r2m.evaluation.checkpoints import choose, window_mean

ROWS = [{"id": f"r{i}", "post_id": f"p{i}", "prompt": f"P{i}"} for i in range(400)]


def _samples(n):
    return [(f"a{i}", f"b{i}") for i in range(n)], [(float(i % 3), 1.0) for i in range(n)]


def test_label_pairs_orders_by_gold_and_drops_ties():
    samples, gold = _samples(6)  # gold(a) = 0, 1, 2, 0, 1, 2 vs gold(b) = 1
    pairs, ties = label_pairs(ROWS[:6], samples, gold, label_noise=0.0, seed=0)
    assert ties == 2 and [p["id"] for p in pairs] == ["r0", "r2", "r3", "r5"]
    assert pairs[0]["chosen"] == "b0" and pairs[1]["chosen"] == "a2"
    assert all(p["label_agrees_with_gold"] and p["gold_margin"] == 1.0 for p in pairs)


def test_label_noise_flips_about_that_share_and_is_seeded():
    samples, gold = _samples(400)
    pairs, _ = label_pairs(ROWS, samples, gold, label_noise=0.25, seed=3)
    flipped = sum(not p["label_agrees_with_gold"] for p in pairs) / len(pairs)
    assert 0.18 < flipped < 0.32
    assert all(p["gold_margin"] < 0 for p in pairs if not p["label_agrees_with_gold"])
    assert pairs == label_pairs(ROWS, samples, gold, label_noise=0.25, seed=3)[0]
    assert pairs != label_pairs(ROWS, samples, gold, label_noise=0.25, seed=4)[0]
    with pytest.raises(ValueError, match="label_noise"):
        label_pairs(ROWS, samples, gold, label_noise=0.5, seed=0)


def test_mixed_pairs_replaces_the_edit_share_by_edit_pairs():
    posts = generate_posts(20, seed=1)
    rows = [{"id": p.id, "post_id": p.id, "prompt": "P"} for p in posts]
    samples, gold = [("x", "y")] * 20, [(1.0, 0.0)] * 20
    assert len(edit_posts(rows, 0.25, seed=0)) == 5
    pairs, _ = mixed_pairs(rows, {p.id: p for p in posts}, samples, gold, 0.0, 0.25, seed=0)
    kinds = [p["chosen_kind"] for p in pairs]
    assert len(pairs) == 20 and kinds.count("policy") == 15
    assert [p["id"] for p in pairs] == [r["id"] for r in rows]  # the rows' order is kept
    none, _ = mixed_pairs(rows, {p.id: p for p in posts}, samples, gold, 0.0, 0.0, seed=0)
    assert all(p["chosen"] == "x" for p in none)


def test_checkpoint_choices():
    rounds = [
        {"proxy": 1.0, "heldout": 0.5, "gold": -1.0},
        {"proxy": 2.0, "heldout": 0.7, "gold": -0.5},
        {"proxy": 3.0, "heldout": 0.7, "gold": -2.0},
    ]
    assert choose(rounds) == {"final": 2, "best_proxy": 2, "best_heldout": 1, "oracle": 1}  # ties: earliest
    assert "best_heldout" not in choose([{"proxy": 1.0, "gold": 0.0}])
    with pytest.raises(ValueError):
        choose([])
    rows = [{"step": s, "kl": float(s)} for s in range(1, 11)]
    assert window_mean(rows, "kl", 10, 3) == 9.0 and window_mean(rows, "x", 10, 3) is None
