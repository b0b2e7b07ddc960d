"""The R2M reward head: policy-feedback cross-attention + the score head phi, on top of a frozen RM trunk.

    r = phi(H_fin),  H_fin = (1 - omega(t)) * CA(H, h, mask) + omega(t) * H

H [B, D_rm] is the frozen trunk's reward token embedding (computed once per rollout batch), h [B, S, D_p] the policy's
last-layer hidden states over query + response. With ``use_attention=False`` (the ``iter_head`` variant) r = phi(H).
Saved as ``r2m_head.safetensors`` + ``r2m_head.json``; the trunk it belongs to is named in the JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from r2m.models.feedback import PolicyFeedbackAttention, blend

WEIGHTS = "r2m_head.safetensors"
CONFIG = "r2m_head.json"


@dataclass
class R2MHeadConfig:
    rm_dim: int
    policy_dim: int
    attn_dim: int
    num_heads: int = 1
    use_attention: bool = True
    omega_floor: float = 0.6
    total_steps: int = 1
    noise: bool = False  # trained on Gaussian noise in place of h (r2m_noise): score it on noise too
    out_init_gain: float = 0.1  # Xavier gain of W_o at initialisation
    trunk: str = ""  # the reward-model directory whose trunk produces H (relative to the pipeline's working dir)
    policy: str = ""  # the policy directory whose hidden states are h


class R2MRewardHead(nn.Module):
    """Cross-attention (optional) + score head phi; phi starts as the vanilla RM's head."""

    def __init__(self, config: R2MHeadConfig, head: nn.Linear | None = None) -> None:
        super().__init__()
        self.config = config
        self.attn = (
            PolicyFeedbackAttention(
                config.rm_dim,
                config.policy_dim,
                config.attn_dim,
                config.num_heads,
                out_init_gain=config.out_init_gain,
            )
            if config.use_attention
            else None
        )
        self.head = nn.Linear(config.rm_dim, 1)
        if head is not None:
            self.head.load_state_dict(head.state_dict())

    def forward(self, rte: Tensor, feedback: Tensor | None, mask: Tensor | None, omega: float) -> Tensor:
        """Rewards [B] from RTE [B, D_rm], feedback [B, S, D_p] and mask [B, S] at blend weight ``omega``."""
        if self.attn is None:
            return self.head(rte).squeeze(-1)
        if feedback is None or mask is None:
            raise ValueError("R2MRewardHead with attention needs the policy feedback and its mask")
        fused = blend(rte, self.attn(rte, feedback, mask), omega)
        return self.head(fused).squeeze(-1)

    def attention_part(self, rte: Tensor, feedback: Tensor, mask: Tensor, omega: float) -> tuple[Tensor, Tensor]:
        """The cross-attention's part of the reward and of H_fin: ``(1 - omega) w . CA(H, h)`` [B] (phi is linear:
        the reward is this plus ``omega w . H + b``) and the norm of ``(1 - omega) CA(H, h)`` [B]."""
        if self.attn is None:
            raise ValueError("attention_part: this head has no cross-attention (iter_head)")
        attended = (1.0 - omega) * self.attn(rte, feedback, mask)  # [B, D_rm]
        return attended @ self.head.weight[0], attended.norm(dim=-1)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, path / WEIGHTS)
        (path / CONFIG).write_text(json.dumps(asdict(self.config), indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: str | Path) -> R2MRewardHead:
        path = Path(path)
        if not (path / CONFIG).exists():
            raise FileNotFoundError(f"{path}: no {CONFIG} (not a saved R2M reward head)")
        head = cls(R2MHeadConfig(**json.loads((path / CONFIG).read_text())))
        head.load_state_dict(load_file(path / WEIGHTS))
        return head

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Cross-attention + phi: the only parameters R2M updates."""
        return list(self.parameters())


OPTIMIZER = "r2m_optimizer.pt"
EXTRA = "r2m_state.pt"  # tensors only (e.g. the noise generator's state), loaded with weights_only=True


def load_state(head: R2MRewardHead, optimizer: torch.optim.Optimizer, path: Path) -> dict | None:
    """Restore head weights and optimizer state saved by :func:`save_state` (weights_only loading); returns the
    ``extra`` dict saved beside them (None if there was none)."""
    head.load_state_dict(load_file(path / WEIGHTS))
    optimizer.load_state_dict(torch.load(path / OPTIMIZER, weights_only=True))
    return torch.load(path / EXTRA, weights_only=True) if (path / EXTRA).exists() else None


def save_state(head: R2MRewardHead, optimizer: torch.optim.Optimizer, path: Path, extra: dict | None = None) -> None:
    head.save(path)
    torch.save(optimizer.state_dict(), path / OPTIMIZER)
    if extra is not None:
        torch.save(extra, path / EXTRA)
