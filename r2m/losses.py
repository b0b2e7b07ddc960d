"""R2M reward-model losses (docs/method.md, "Equations").

Shapes: n = prompts, K = responses per prompt (the GRPO / RLOO group), rewards are [n, K].

    L_BT    = -log sigmoid(r_w - r_l)                 w = argmax_j r_ij, l = argmin_j r_ij (self-labelled)
    z       = (r_i - mean_j r_i) / (std_j r_i + eps + f s)  population std; s = the batch's std (detached)
    L_GRE   = -sum_j p_ij log p_ij, p = softmax(z)   minimised: sharpens degenerate groups
    L_GREBT = mean_i [(1 - alpha) L_BT + alpha L_GRE]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bt_loss", "group_reward_entropy", "self_label", "grebt_terms", "grebt_loss"]


def bt_loss(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Bradley-Terry loss: mean of -log sigmoid(r_chosen - r_rejected).

    Args:
        r_chosen, r_rejected: [...] rewards of the preferred / dispreferred responses (same shape).
    Returns:
        scalar mean loss.
    """
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def group_reward_entropy(rewards: Tensor, eps: float = 1e-6, std_floor: float = 0.0) -> Tensor:
    """Entropy of the softmax of the z-normalised rewards of each group.

    A group whose population std is below `eps` (all K rewards tied) contributes exactly 0, with zero gradient
    (DECIDED in the spec). The std is taken through a guarded sqrt so such rows never produce NaN gradients.

    The entropy of a z-score does not depend on the group's scale, so its gradient w.r.t. the rewards grows as
    1 / std: with an absolute eps alone a near-tied group just above it dominates the batch's gradient.
    ``std_floor`` f adds f * s to the denominator, s = the population std of the whole batch (detached), which bounds
    any group's gradient at about 1 / (f s); f = 0 is the paper's form.

    Args:
        rewards: [n, K] rewards of the K responses of each of n prompts.
        eps: added to the std in the z-score denominator, and the threshold for a degenerate group.
        std_floor: f >= 0, see above.
    Returns:
        [n] entropy per group, in [0, log K].
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [n, K], got shape {tuple(rewards.shape)}")

    mean = rewards.mean(dim=-1, keepdim=True)
    var = (rewards - mean).pow(2).mean(dim=-1, keepdim=True)  # population variance, [n, 1]

    degenerate = var.detach() < eps**2  # std < eps, [n, 1]
    std = torch.where(degenerate, torch.ones_like(var), var).sqrt()  # sqrt never sees 0 -> no inf / NaN grads
    floor = std_floor * rewards.detach().std(unbiased=False) if std_floor > 0 else 0.0

    z = (rewards - mean) / (std + eps + floor)
    log_p = z.log_softmax(dim=-1)
    entropy = -(log_p.exp() * log_p).sum(dim=-1)  # [n]

    return torch.where(degenerate.squeeze(-1), torch.zeros_like(entropy), entropy)


@torch.no_grad()
def self_label(rewards: Tensor) -> tuple[Tensor, Tensor]:
    """Self-labelled pair of each group: winner = argmax_j, loser = argmin_j (not differentiated).

    For a fully tied group both are index 0 (first occurrence), so its BT term is log 2 with zero gradient.

    Args:
        rewards: [n, K].
    Returns:
        (winner [n], loser [n]) long indices into K.
    """
    return rewards.argmax(dim=-1), rewards.argmin(dim=-1)


def grebt_terms(
    rewards: Tensor, alpha: float, eps: float = 1e-6, std_floor: float = 0.0, labels: Tensor | None = None
) -> dict[str, Tensor]:
    """GREBT loss and its two parts, for logging.

    Args:
        rewards: [n, K] recomputed rewards r'_ij (K >= 2), differentiable w.r.t. the trained parameters.
        alpha: weight of the GRE term in [0, 1] (paper: 0.3; 0 = `r2m_no_gre`, 1 = `r2m_no_bt`).
        eps, std_floor: see `group_reward_entropy`.
        labels: [n, K] scores the best / worst of each group are chosen by (default: ``rewards``; the
            annotation-time scores for ``r2m.self_labels: annotation``).
    Returns:
        scalars {"bt": mean_i L_BT, "gre": mean_i L_GRE, "grebt": mean_i[(1 - alpha) L_BT + alpha L_GRE]}.
    """
    if rewards.ndim != 2 or rewards.shape[-1] < 2:
        raise ValueError(f"rewards must be [n, K] with K >= 2, got shape {tuple(rewards.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")

    if labels is not None and labels.shape != rewards.shape:
        raise ValueError(f"labels must have the shape of rewards {tuple(rewards.shape)}, got {tuple(labels.shape)}")
    winner, loser = self_label(rewards if labels is None else labels)
    r_w = rewards.gather(-1, winner[:, None]).squeeze(-1)  # [n]
    r_l = rewards.gather(-1, loser[:, None]).squeeze(-1)  # [n]

    bt = -F.logsigmoid(r_w - r_l)  # [n]
    gre = group_reward_entropy(rewards, eps=eps, std_floor=std_floor)  # [n]
    grebt = ((1.0 - alpha) * bt + alpha * gre).mean()

    return {"bt": bt.mean(), "gre": gre.mean(), "grebt": grebt}


def grebt_loss(rewards: Tensor, alpha: float, eps: float = 1e-6) -> Tensor:
    """L_GREBT = mean_i[(1 - alpha) L_BT + alpha L_GRE] on self-labelled (best, worst) pairs.

    rewards [n, K] -> scalar; see `grebt_terms`.
    """
    return grebt_terms(rewards, alpha=alpha, eps=eps)["grebt"]
