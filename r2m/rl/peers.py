"""The peers' rewards (``../shared`` spec ``peers.md``): PAR, RM ensembles, WARM's weight average, TRL's penalties.

Every scorer here has the signature of :class:`r2m.rl.reward.ProxyScorer` and returns [B] rewards for a rollout
batch; the RL loop, the monitor and the frozen RMs every method is measured by are the same for all of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from r2m.models.reward_model import RewardModel
from r2m.rl.policy_pass import PolicyPass

Penalty = Callable[[Sequence[Sequence[int]]], list[float]]  # completion token ids -> [B] additive rewards


def bootstrap(rows: Sequence[dict], seed: int) -> list[dict]:
    """A bootstrap resample of ``rows`` (same size, with replacement), seeded."""
    rng = random.Random(seed)
    return [rows[rng.randrange(len(rows))] for _ in range(len(rows))]


@torch.no_grad()
def average_weights(models: Sequence[torch.nn.Module]) -> dict[str, Tensor]:
    """WARM: the element-wise mean of the models' floating-point weights (integer buffers from the first)."""
    states = [m.state_dict() for m in models]
    keys = list(states[0])
    if any(list(s) != keys for s in states[1:]):
        raise ValueError("average_weights: the models have different parameter names")
    out = {}
    for k in keys:
        first = states[0][k]
        out[k] = torch.stack([s[k] for s in states]).mean(0) if first.is_floating_point() else first.clone()
    return out


def normalise_stats(scores: Tensor) -> tuple[float, float]:
    """(mean, std) of a member's scores [N] on the RM-train responses (std floored at 1e-6)."""
    return float(scores.mean()), max(float(scores.std(unbiased=False)), 1e-6)


def combine(scores: Tensor, how: str, lam: float = 0.0) -> Tensor:
    """Ensemble rewards [B] from normalised member scores [k, B]: ``mean``, ``min`` (worst case) or ``uwo``
    (mean - lam * population variance over members)."""
    if how == "mean":
        return scores.mean(0)
    if how == "min":
        return scores.min(0).values
    if how == "uwo":
        return scores.mean(0) - lam * scores.var(0, unbiased=False)
    raise ValueError(f"unknown ensemble combination {how!r}")


class EnsembleScorer:
    """r = combine_i((r_i(x, y) - mu_i) / sd_i) over k frozen reward models (Coste et al. 2024)."""

    def __init__(
        self,
        members: Sequence[RewardModel],
        stats: Sequence[tuple[float, float]],
        how: str,
        lam: float = 0.0,
        max_length: int = 512,
    ) -> None:
        if len(members) != len(stats) or len(members) < 2:
            raise ValueError(
                f"an ensemble needs >= 2 members with one (mean, std) each, got {len(members)}, {len(stats)}"
            )
        self.members = [m.eval().requires_grad_(False) for m in members]
        self.stats, self.how, self.lam, self.max_length = list(stats), how, lam, max_length
        self.last_members: Tensor | None = None  # [k, B] normalised member scores of the last batch

    @torch.no_grad()
    def __call__(self, texts: Sequence[str], policy_pass: PolicyPass | None = None, step: int = 0, **_) -> Tensor:
        rows = [
            (m.score_texts(texts, max_length=self.max_length).float() - mu) / sd
            for m, (mu, sd) in zip(self.members, self.stats, strict=True)
        ]
        self.last_members = torch.stack(rows)
        return combine(self.last_members, self.how, self.lam)


class PARScorer:
    """PAR (Fu et al. 2025): r = sigmoid(r(x, y) - r_ref(x)), r_ref(x) the mean vanilla-RM score of the SFT
    reference's responses to prompt x (:func:`reference_scores`), looked up by the RM prompt."""

    def __init__(self, rm: RewardModel, ref_scores: Mapping[str, float], max_length: int = 512) -> None:
        self.rm = rm.eval().requires_grad_(False)
        self.ref_scores, self.max_length = dict(ref_scores), max_length
        self.cache: dict | None = None

    @torch.no_grad()
    def __call__(
        self,
        texts: Sequence[str],
        policy_pass: PolicyPass | None = None,
        step: int = 0,
        *,
        rm_prompts: Sequence[str] | None = None,
        **_,
    ) -> Tensor:
        if rm_prompts is None or len(rm_prompts) != len(texts):
            raise ValueError("PAR needs the RM prompt of every row (rm_prompts)")
        missing = sorted({p for p in rm_prompts if p not in self.ref_scores})
        if missing:
            raise KeyError(f"PAR: no reference score for {len(missing)} prompt(s), e.g. {missing[0][:60]!r}")
        ref = torch.tensor([self.ref_scores[p] for p in rm_prompts], dtype=torch.float32)
        rte = self.rm.embed_texts(texts, max_length=self.max_length)
        self.cache = {"rte": rte, "step": step}  # the frozen RMs score the proxy from these (no second pass)
        return torch.sigmoid(self.rm.score_embeddings(rte).float().cpu() - ref)


class PenalisedScorer:
    """A scorer plus weighted TRL penalty rewards of the completion tokens: r = base + sum_j w_j p_j(y)."""

    def __init__(self, base, penalties: Sequence[tuple[str, Penalty, float]]) -> None:
        self.base, self.penalties = base, list(penalties)
        self.last_penalties: dict[str, Tensor] = {}

    def __getattr__(self, name: str):  # the base scorer's rm / cache, for the frozen RMs' reuse of its embeddings
        if name in ("base", "penalties", "last_penalties"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __call__(
        self,
        texts: Sequence[str],
        policy_pass: PolicyPass,
        step: int,
        *,
        completion_ids: Sequence[Sequence[int]] | None = None,
        **kw,
    ) -> Tensor:
        if completion_ids is None or len(completion_ids) != len(texts):
            raise ValueError("a penalised reward needs the completion token ids of every row")
        base = self.base(texts, policy_pass, step, **kw)
        self.base_rewards = base
        out = base.float().clone()
        self.last_penalties = {}
        for name, fn, w in self.penalties:
            p = torch.tensor(fn([list(c) for c in completion_ids]), dtype=torch.float32)
            self.last_penalties[name] = p
            out = out + w * p
        return out


def reference_scores(
    reference,
    tok,
    rm: RewardModel,
    rows: Sequence[dict],
    policy_prompts: Sequence[str],
    n_refs: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    max_length: int = 512,
    progress: bool = False,
) -> list[dict]:
    """PAR's centre per RL prompt: ``n_refs`` sampled responses of the SFT ``reference`` to each prompt (seeded, in
    file order), scored by the vanilla ``rm``; ``[{"id", "prompt", "ref_score", "responses"}]`` aligned with ``rows``
    (``rows[i]["prompt"]`` is the RM prompt, ``policy_prompts[i]`` what the policy sees)."""
    from r2m.generation import generate

    repeated = [p for p in policy_prompts for _ in range(n_refs)]
    gens = generate(
        reference, tok, repeated, max_new_tokens, greedy=False, temperature=temperature, seed=seed, progress=progress
    )
    texts = [rows[i // n_refs]["prompt"] + g for i, g in enumerate(gens)]
    scores = rm.score_texts(texts, max_length=max_length).float().view(len(rows), n_refs)
    return [
        {
            "id": r["id"],
            "prompt": r["prompt"],
            "ref_score": float(s.mean()),
            "responses": gens[i * n_refs : (i + 1) * n_refs],
        }
        for i, (r, s) in enumerate(zip(rows, scores, strict=True))
    ]
