"""BT, group reward entropy and GREBT against values computed by hand in plain Python."""

import math

import pytest
import torch

from r2m.losses import bt_loss, grebt_loss, grebt_terms, group_reward_entropy, self_label


def neg_log_sigmoid(x: float) -> float:
    return -math.log(1.0 / (1.0 + math.exp(-x)))


def hand_entropy(rewards: list[float], eps: float = 1e-6) -> float:
    """z-score with population std, softmax, entropy, all in plain Python."""
    k = len(rewards)
    mean = sum(rewards) / k
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / k)
    if std < eps:
        return 0.0
    z = [(r - mean) / (std + eps) for r in rewards]
    exps = [math.exp(v) for v in z]
    p = [e / sum(exps) for e in exps]
    return -sum(pi * math.log(pi) for pi in p)


# --- Bradley-Terry ------------------------------------------------------------------------------------------


def test_bt_tie_is_log2():
    assert bt_loss(torch.tensor([1.5]), torch.tensor([1.5])).item() == pytest.approx(math.log(2))


def test_bt_hand_values():
    chosen, rejected = [0.5, -1.0, 2.0], [0.0, 1.0, -1.0]
    expected = sum(neg_log_sigmoid(c - r) for c, r in zip(chosen, rejected, strict=True)) / 3
    got = bt_loss(torch.tensor(chosen, dtype=torch.float64), torch.tensor(rejected, dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_bt_stable_for_large_margins():
    assert bt_loss(torch.tensor([100.0]), torch.tensor([-100.0])).item() == pytest.approx(0.0, abs=1e-6)
    assert bt_loss(torch.tensor([-100.0]), torch.tensor([100.0])).item() == pytest.approx(200.0)


# --- group reward entropy -----------------------------------------------------------------------------------


def test_gre_batch_shape():
    assert group_reward_entropy(torch.randn(3, 5)).shape == (3,)


def test_gre_outlier_group_hand_value():
    rewards = [0.0, 0.0, 0.0, 4.0]
    got = group_reward_entropy(torch.tensor([rewards], dtype=torch.float64))
    assert got.item() == pytest.approx(hand_entropy(rewards), rel=1e-9)


def test_gre_hand_values_batch():
    rows = [[1.0, 2.0, 3.0], [0.3, -0.2, 0.9], [5.0, 5.0, -5.0]]
    got = group_reward_entropy(torch.tensor(rows, dtype=torch.float64))
    assert got.tolist() == pytest.approx([hand_entropy(r) for r in rows], rel=1e-9)


def test_gre_bounds_and_invariance():
    r = torch.randn(6, 4, dtype=torch.float64)
    h = group_reward_entropy(r)
    assert (h >= 0).all() and (h <= math.log(4) + 1e-12).all()
    # z-scoring makes it invariant to shifting and (positive) scaling each group
    assert torch.allclose(group_reward_entropy(3.0 * r + 7.0), h, atol=1e-5)


def test_gre_tied_group_contributes_zero_without_nan_grad():
    rewards = torch.tensor([[2.0, 2.0, 2.0, 2.0], [0.0, 1e-8, 0.0, 0.0], [0.0, 1.0, 0.5, 3.0]], dtype=torch.float64)
    rewards.requires_grad_()
    h = group_reward_entropy(rewards)
    assert h[0].item() == 0.0 and h[1].item() == 0.0  # std < eps
    assert h[2].item() > 0.0

    h.sum().backward()
    assert torch.isfinite(rewards.grad).all()
    assert (rewards.grad[:2] == 0).all()
    assert (rewards.grad[2] != 0).any()


def test_gre_rejects_wrong_rank():
    with pytest.raises(ValueError):
        group_reward_entropy(torch.randn(4))


# --- self-labelling and GREBT -------------------------------------------------------------------------------


def test_self_label():
    rewards = torch.tensor([[1.0, 3.0, 2.0], [5.0, -1.0, 0.0]], requires_grad=True)
    winner, loser = self_label(rewards)
    assert winner.tolist() == [1, 0] and loser.tolist() == [0, 1]
    assert winner.dtype == torch.long and not winner.requires_grad


ROWS = [[0.0, 0.0, 0.0, 4.0], [1.0, -2.0, 0.5, 0.25], [0.2, 0.1, 0.4, 0.3]]


def test_grebt_alpha0_is_bt_on_max_min():
    r = torch.tensor(ROWS, dtype=torch.float64)
    expected = bt_loss(r.max(-1).values, r.min(-1).values)
    assert grebt_loss(r, alpha=0.0).item() == pytest.approx(expected.item(), rel=1e-12)


def test_grebt_alpha1_is_mean_gre():
    r = torch.tensor(ROWS, dtype=torch.float64)
    assert grebt_loss(r, alpha=1.0).item() == pytest.approx(group_reward_entropy(r).mean().item(), rel=1e-12)


def test_grebt_hand_mixture():
    alpha = 0.3
    per_row = [(1 - alpha) * neg_log_sigmoid(max(r) - min(r)) + alpha * hand_entropy(r) for r in ROWS]
    terms = grebt_terms(torch.tensor(ROWS, dtype=torch.float64), alpha=alpha)
    assert set(terms) == {"bt", "gre", "grebt"}
    assert terms["grebt"].item() == pytest.approx(sum(per_row) / len(ROWS), rel=1e-9)
    assert terms["bt"].item() == pytest.approx(sum(neg_log_sigmoid(max(r) - min(r)) for r in ROWS) / 3, rel=1e-9)
    assert terms["gre"].item() == pytest.approx(sum(hand_entropy(r) for r in ROWS) / 3, rel=1e-9)
    assert grebt_loss(torch.tensor(ROWS, dtype=torch.float64), alpha=alpha).item() == terms["grebt"].item()


def test_grebt_gradient_flows():
    r = torch.randn(3, 4, requires_grad=True)
    grebt_loss(r, alpha=0.3).backward()
    assert r.grad is not None and torch.isfinite(r.grad).all() and (r.grad != 0).any()


def test_grebt_sgd_widens_gap_and_sharpens_groups():
    torch.manual_seed(0)
    r = (0.1 * torch.randn(4, 6)).requires_grad_()
    gap0 = (r.max(-1).values - r.min(-1).values).detach()
    ent0 = group_reward_entropy(r).detach()

    opt = torch.optim.SGD([r], lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        grebt_loss(r, alpha=0.3).backward()
        opt.step()

    assert ((r.max(-1).values - r.min(-1).values) > gap0).all()
    assert (group_reward_entropy(r) < ent0).all()


@pytest.mark.parametrize("shape, alpha", [((3, 1), 0.3), ((6,), 0.3), ((3, 4), -0.1), ((3, 4), 1.5)])
def test_grebt_invalid_args(shape, alpha):
    with pytest.raises(ValueError):
        grebt_loss(torch.randn(*shape), alpha=alpha)


def test_gre_std_floor_bounds_a_near_tied_group():
    # one ordinary group and one tied to 1e-5: without the floor the tied group's gradient is ~1e5 times larger
    rewards = torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0 + 1e-5, 1.0, 1.0 - 1e-5]], requires_grad=True)

    def grads(floor: float) -> torch.Tensor:
        rewards.grad = None
        group_reward_entropy(rewards, std_floor=floor).sum().backward()
        return rewards.grad.abs().sum(dim=1)  # [2]: per group

    raw = grads(0.0)
    assert raw[1] > 1e3 * raw[0]
    floored = grads(0.1)
    assert floored[1] < 20 * floored[0]
    # the ordinary group's own entropy hardly changes (its std is close to the batch's)
    plain = group_reward_entropy(rewards.detach()[:1])
    assert torch.allclose(group_reward_entropy(rewards.detach(), std_floor=0.1)[:1], plain, atol=0.05)


def test_self_labels_can_come_from_the_annotation_time_scores():
    rewards = torch.tensor([[0.0, 2.0, 1.0]], requires_grad=True)
    annotated = torch.tensor([[5.0, 0.0, 9.0]])  # best = 2, worst = 1
    bt = grebt_terms(rewards, alpha=0.0, labels=annotated)["bt"]
    assert float(bt.detach()) == pytest.approx(float(-torch.nn.functional.logsigmoid(torch.tensor(1.0 - 2.0))))
    with pytest.raises(ValueError, match="labels must have the shape"):
        grebt_terms(rewards, alpha=0.0, labels=annotated[:, :2])
