"""The reward callable handed to TRL's GRPO / RLOO trainers, with per-step monitoring.

TRL calls it with the rollout batch (prompts repeated K times, consecutively) plus dataset columns; it returns the
method's training reward per completion and logs, through TRL's ``log_metric``, the same quantities for every method:
``proxy_reward`` (the frozen vanilla RM's score), ``heldout_reward`` (the held-out RM's), ``train_reward`` (the
method's own reward: for vanilla the proxy itself), gold score, KL to the reference, length and repetition, and the
reward spread within groups. The KL and the held-out RM cost a forward each, so they are measured on
``rl.monitor_sample`` rows of the batch (:func:`r2m.rl.policy_pass.sample_rows`) every ``rl.monitor_every`` steps
(and the last), and those steps alone log them; the rest on every row of every step.

On several processes each rank scores its own slice of the batch; the metrics are averaged over the ranks, each
weighted by the rows it is a mean over, before they are logged (:func:`r2m.distributed.weighted_means`), so every
rank logs the single-process value of the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from r2m.distributed import is_distributed, weighted_means
from r2m.evaluation.text_stats import batch_stats
from r2m.models.reward_model import RewardModel
from r2m.rl.numerics import FaultLog, nonfinite_count
from r2m.rl.policy_pass import PolicyMonitor, PolicyPass

GoldFn = Callable[[Sequence[str], Sequence[str]], list[float]]  # (post_ids, completions) -> gold scores


class ProxyScorer(Protocol):
    """Scores a rollout batch [B]; R2M scorers also read the policy pass (hidden states). Keyword arguments every
    scorer receives and may ignore: ``rm_prompts`` (the plain task prompt of each row, PAR's key) and
    ``completion_ids`` (the generated tokens of each row, for TRL's penalty rewards)."""

    def __call__(self, texts: Sequence[str], policy_pass: PolicyPass, step: int, **kw: Any) -> Tensor: ...


class VanillaScorer:
    """The frozen vanilla reward model: r = phi(H). Keeps the batch's reward token embeddings H [B, D] in
    ``cache`` (as R2M's scorer does), for a held-out RM that shares the trunk (:class:`FrozenRMs`)."""

    def __init__(self, rm: RewardModel, max_length: int = 512) -> None:
        self.rm = rm.eval().requires_grad_(False)
        self.max_length = max_length
        self.cache: dict | None = None

    def __call__(self, texts: Sequence[str], policy_pass: PolicyPass, step: int, **_: Any) -> Tensor:
        rte = self.rm.embed_texts(texts, max_length=self.max_length)
        self.cache = {"rte": rte, "step": step}
        with torch.no_grad():
            return self.rm.score_embeddings(rte)


class FrozenRMs:
    """The frozen reward models every method is measured by: the vanilla RM (the proxy) and the held-out RM.

    The proxy costs nothing extra when the method's scorer is that RM (vanilla) or embeds with its trunk (vanilla and
    R2M keep the reward token embeddings [B, D] of the batch in ``scorer.cache``): only the score head runs again. A
    held-out RM whose trunk is the proxy's (:meth:`RewardModel.share_trunk_with`: a frozen trunk with another head,
    as in the ``smol`` profile) scores those embeddings too, so it costs its head only.
    """

    def __init__(self, proxy: RewardModel, heldout: RewardModel | None, max_length: int = 512) -> None:
        self.proxy = proxy.eval().requires_grad_(False)
        self.heldout = heldout.eval().requires_grad_(False) if heldout is not None else None
        self.max_length = max_length

    def __call__(
        self, texts: Sequence[str], scorer: ProxyScorer, rewards: Tensor, step: int, rows: Sequence[int] | None = None
    ) -> dict[str, Tensor]:
        """``{"proxy_reward": [B], "heldout_reward": [b]}`` of ``texts``; ``rewards`` [B] are the scorer's; the
        held-out RM scores only ``rows`` (default: all; none: no ``heldout_reward``)."""
        cache = getattr(scorer, "cache", None) or {}
        cached = getattr(scorer, "rm", None) is self.proxy and cache.get("step") == step
        rte = cache["rte"] if cached else None  # [B, D]: the proxy trunk's embeddings of ``texts``
        with torch.no_grad():
            if isinstance(scorer, VanillaScorer) and scorer.rm is self.proxy:
                proxy = rewards
            else:
                if rte is None:
                    rte = self.proxy.embed_texts(texts, max_length=self.max_length)
                proxy = self.proxy.score_embeddings(rte)
            out = {"proxy_reward": proxy.float().cpu()}
            idx = list(range(len(texts))) if rows is None else list(rows)
            if self.heldout is not None and idx:  # no rows: a step the monitor skips
                if rte is not None and self.heldout.trunk is self.proxy.trunk:
                    held = self.heldout.score_embeddings(rte[idx])
                else:
                    held = self.heldout.score_texts([texts[i] for i in idx], max_length=self.max_length)
                out["heldout_reward"] = held.float().cpu()
        return out


def group_std(rewards: Tensor, k: int) -> float:
    """Mean over groups of the population std of the K rewards of each group."""
    if rewards.numel() % k:
        return float("nan")
    return float(rewards.view(-1, k).std(dim=1, unbiased=False).mean())


class RewardFunction:
    """Callable for ``reward_funcs=[...]`` in TRL; ``__name__`` names its metrics in TRL's logs."""

    __name__ = "proxy"

    def __init__(
        self,
        scorer: ProxyScorer,
        monitor: PolicyMonitor,
        num_generations: int,
        gold: GoldFn | None = None,
        frozen: FrozenRMs | None = None,
        faults: FaultLog | None = None,
    ) -> None:
        self.scorer = scorer
        self.faults = faults if faults is not None else FaultLog(max_steps=3, max_scale=10.0)
        self.frozen = frozen
        self.monitor = monitor
        self.k = num_generations
        self.gold = gold
        self.last_batch: dict[str, Any] | None = None  # kept for updates that follow the policy step (R2M)

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        completion_ids: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        state = kwargs.get("trainer_state")
        step = int(state.global_step) if state is not None else 0
        if completion_ids is None:
            raise ValueError("the reward function needs TRL's completion_ids (the tokens the policy generated)")
        # vLLM rollouts (nothing captured): the monitor recomputes the feedback from the prompts' tokens
        recompute = getattr(self.monitor, "recompute_feedback", False)
        ppass = self.monitor.rollout(completion_ids, step, **({"prompts": prompts} if recompute else {}))
        rows = ppass.rows
        rm_prompts = kwargs.get("rm_prompt") or prompts  # the plain task prompt the RM was trained on
        texts = [p + c for p, c in zip(rm_prompts, completions, strict=True)]
        rewards = self.scorer(texts, ppass, step, rm_prompts=rm_prompts, completion_ids=completion_ids).float().cpu()
        if bad := nonfinite_count(rewards):  # skipped (NumericsGuard); never handed on as if it were a reward
            self.faults.flag("reward", f"{bad} of {rewards.numel()} rewards non-finite ({type(self.scorer).__name__})")
        # the frozen RMs reuse a vanilla scorer's rewards as the proxy: hand them the base reward, before penalties
        base = getattr(self.scorer, "base_rewards", rewards).float().cpu()
        frozen = self.frozen(texts, self.scorer, base, step, rows) if self.frozen is not None else {}
        metrics = {
            "train_reward": float(rewards.mean()),
            "train_group_std": group_std(rewards, self.k),
            **{name: float(v.mean()) for name, v in frozen.items() if v.numel()},
            **({"kl_to_ref": float(ppass.kl[rows].mean())} if rows else {}),
            **batch_stats(completions),
            **{f"penalty_{k}": float(v.mean()) for k, v in getattr(self.scorer, "last_penalties", {}).items()},
        }
        proxy = frozen.get("proxy_reward")
        if proxy is not None and (ratio := self.faults.scale(step + 1, base, proxy)) is not None:
            metrics["reward_scale_ratio"] = ratio
        members = getattr(self.scorer, "last_members", None)  # an ensemble's normalised member scores [k, B]
        if members is not None:
            metrics["ensemble_member_std"] = float(members.std(0, unbiased=False).mean())
        post_ids = kwargs.get("post_id")
        if self.gold is not None and post_ids is not None:
            gold = torch.tensor(self.gold(post_ids, completions), dtype=torch.float32)
            metrics["gold_score"] = float(gold.mean())
            metrics["gold_group_std"] = group_std(gold, self.k)
        if getattr(ppass, "feedback_forward_s", None) is not None:  # vLLM: the feedback's backbone forward (timing)
            metrics["policy_feedback_forward_s"] = ppass.feedback_forward_s
        if is_distributed():  # the whole batch's means, as one process holding all of it would log them
            measured = {"kl_to_ref": len(rows), "heldout_reward": len(rows)}  # the monitored rows only
            metrics = weighted_means(metrics, {name: measured.get(name, len(texts)) for name in metrics})
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for name, value in metrics.items():
                log_metric(name, value)
        self.last_batch = {
            "prompts": list(prompts),
            "prompt_ids": ppass.prompt_ids,
            "completions": list(completions),
            "completion_ids": [list(c) for c in completion_ids],
            "rewards": rewards,
            "step": step,
        }
        return rewards.tolist()
