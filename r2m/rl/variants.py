"""The tables of what the RL stage can run, kept free of torch and TRL so that configuration checks can read them.

- ``VARIANTS``: the R2M variants, each a set of switches on the one code path in :mod:`r2m.rl.r2m`;
- ``ALGOS``: the online RL algorithms, each a pair of TRL classes that :mod:`r2m.rl.runner` builds (TRL is
  imported there, lazily, by name).

Each variant is one entry of the methods registry (:mod:`r2m.rl.methods`), beside vanilla and the peers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """One row of the R2M variant table, as switches on the same code path."""

    use_attention: bool = True  # cross-attention on policy feedback (False: iter_head, phi only)
    noise: bool = False  # replace h by Gaussian noise with the same mean and variance
    train: bool = True  # online GREBT updates after every policy step
    alpha: float | None = None  # GREBT mixing; None = r2m.alpha
    max_updates: int | None = None  # update only after the first N rollout batches, then frozen (None = always)


VARIANTS: dict[str, Variant] = {
    "r2m": Variant(),
    "r2m_frozen": Variant(train=False),
    "r2m_noise": Variant(noise=True),
    "r2m_no_gre": Variant(alpha=0.0),
    "r2m_no_bt": Variant(alpha=1.0),
    "iter_head": Variant(use_attention=False),
    "r2m_once": Variant(max_updates=1),  # reviewers' ablation: R2M updated once, then frozen
}


@dataclass(frozen=True)
class Algo:
    """An online RL algorithm from TRL: the names of its config and trainer classes in ``trl``."""

    config: str
    trainer: str


ALGOS: dict[str, Algo] = {
    "grpo": Algo(config="GRPOConfig", trainer="GRPOTrainer"),
    "rloo": Algo(config="RLOOConfig", trainer="RLOOTrainer"),
}
