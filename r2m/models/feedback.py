"""Policy feedback into the reward model: sequence-to-token cross-attention (docs/method.md).

Shapes: B = n prompts x K responses, S = query + response length, D_rm = RM width, D_p = policy width,
d = attn_dim.

    q = H W_q          [B, 1, d]     H = reward token embedding (RTE) of the frozen RM trunk, [B, D_rm]
    k = h W_k          [B, S, d]     h = policy feedback (last-layer hidden states of the policy), [B, S, D_p]
    v = h W_v          [B, S, d]
    A = softmax(q k^T / sqrt(d_head) + mask)
    Hhat = (A v) W_o   [B, D_rm]
    H_fin = (1 - omega) Hhat + omega H
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PolicyFeedbackAttention", "blend", "gaussian_like"]


class PolicyFeedbackAttention(nn.Module):
    """Cross-attention from the RTE (one query token) to the policy's hidden states; returns Hhat [B, D_rm].

    Heads split d into `num_heads` chunks of d_head = d / num_heads (the paper uses one head, d_head = d);
    scores are scaled by 1 / sqrt(d_head). No biases, as in the equations.

    Initialisation: W_q, W_k, W_v are Xavier-uniform (keeps q, k, v at the scale of their inputs); W_o is
    Xavier-uniform times `out_init_gain` (default 0.1), so at the start Hhat is small next to H and
    H_fin ~ omega H: the untrained R2M reward is close to a rescaled vanilla reward (ranking nearly
    preserved), while W_o is not zero, so gradients reach all four projections from the first update.
    """

    def __init__(
        self,
        rm_dim: int,
        policy_dim: int,
        attn_dim: int | None = None,
        num_heads: int = 1,
        dropout: float = 0.0,
        *,
        out_init_gain: float = 0.1,
    ) -> None:
        super().__init__()
        attn_dim = rm_dim if attn_dim is None else attn_dim
        if num_heads < 1 or attn_dim % num_heads != 0:
            raise ValueError(f"attn_dim ({attn_dim}) must be divisible by num_heads ({num_heads})")

        self.rm_dim, self.policy_dim, self.attn_dim, self.num_heads = rm_dim, policy_dim, attn_dim, num_heads
        self.dim_head = attn_dim // num_heads
        self.scale = self.dim_head**-0.5

        self.to_q = nn.Linear(rm_dim, attn_dim, bias=False)
        self.to_k = nn.Linear(policy_dim, attn_dim, bias=False)
        self.to_v = nn.Linear(policy_dim, attn_dim, bias=False)
        self.to_out = nn.Linear(attn_dim, rm_dim, bias=False)
        self.dropout = nn.Dropout(dropout)

        for proj in (self.to_q, self.to_k, self.to_v):
            nn.init.xavier_uniform_(proj.weight)
        nn.init.xavier_uniform_(self.to_out.weight, gain=out_init_gain)

    def _split_heads(self, x: Tensor) -> Tensor:
        """[B, L, h * d_head] -> [B, h, L, d_head]."""
        b, length, _ = x.shape
        return x.view(b, length, self.num_heads, self.dim_head).transpose(1, 2)

    def forward(self, rte: Tensor, feedback: Tensor, mask: Tensor) -> Tensor:
        """
        Args:
            rte: [B, D_rm] reward token embedding H.
            feedback: [B, S, D_p] policy hidden states h.
            mask: [B, S], 1 / True = real token, 0 / False = padding.
        Returns:
            [B, D_rm] attended feedback Hhat. A row with no real token gives zeros.
        """
        b, s, _ = feedback.shape
        if mask.shape != (b, s):
            raise ValueError(f"mask must be [B, S] = {(b, s)}, got {tuple(mask.shape)}")
        mask = mask.bool()

        # zero the padding first, so garbage there (even inf / NaN) cannot reach v through 0 * inf
        feedback = feedback.masked_fill(~mask[..., None], 0.0)

        q = self._split_heads(self.to_q(rte)[:, None])  # [B, h, 1, d_head]
        k = self._split_heads(self.to_k(feedback))  # [B, h, S, d_head]
        v = self._split_heads(self.to_v(feedback))  # [B, h, S, d_head]

        sim = (q @ k.transpose(-1, -2)) * self.scale  # [B, h, 1, S]
        key_mask = mask[:, None, None, :]  # [B, 1, 1, S]
        sim = sim.masked_fill(~key_mask, -torch.finfo(sim.dtype).max)

        attn = sim.softmax(dim=-1)
        attn = attn.masked_fill(~key_mask, 0.0)  # guard: a fully masked row is uniform after softmax -> zeros
        attn = self.dropout(attn)

        out = attn @ v  # [B, h, 1, d_head]
        out = out.transpose(1, 2).reshape(b, self.attn_dim)  # [B, d]
        return self.to_out(out)  # [B, D_rm]


def blend(rte: Tensor, attended: Tensor, omega: float) -> Tensor:
    """H_fin = (1 - omega) * Hhat + omega * H; rte = H, attended = Hhat, both [B, D_rm]."""
    return (1.0 - omega) * attended + omega * rte


@torch.no_grad()
def gaussian_like(feedback: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian noise with the mean and variance of the real positions of `feedback` (`r2m_noise` variant).

    Statistics are per sample, pooled over the real positions and all features (population variance).
    Pooling over features on purpose: per-feature means would be the mean-pooled hidden state, i.e. carry the
    very semantics the ablation removes; one (mean, var) per sample keeps only the overall scale of h.
    Padded positions are zero, and they never enter the statistics. Not differentiated.

    Args:
        feedback: [B, S, D_p] policy hidden states.
        mask: [B, S], 1 / True = real token.
        generator: optional torch.Generator for reproducible noise.
    Returns:
        [B, S, D_p] noise; a sample with no real token gives zeros.
    """
    real = mask.bool()[..., None]  # [B, S, 1]
    x = feedback.masked_fill(~real, 0.0)
    count = (real.sum(dim=(1, 2)) * feedback.shape[-1]).clamp(min=1).to(feedback.dtype)  # [B]

    mean = x.sum(dim=(1, 2)) / count  # [B]
    var = (x - mean[:, None, None]).masked_fill(~real, 0.0).pow(2).sum(dim=(1, 2)) / count  # [B]

    # drawn on the CPU (the generator's device) and moved: the same noise on every device
    noise = torch.randn(feedback.shape, generator=generator, dtype=feedback.dtype).to(feedback.device)
    noise = mean[:, None, None] + var.sqrt()[:, None, None] * noise
    return noise.masked_fill(~real, 0.0)
