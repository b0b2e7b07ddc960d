"""R2M in the RL loop: the policy-feedback scorer, the online GREBT update after every policy step, the variants.

Per rollout batch (K responses for each of n prompts):
  1. the frozen RM trunk gives the reward token embedding H [B, D_rm] (once per batch, cached);
  2. the feedback h [B, S, D_p] is the policy's own last-layer states from TRL's generation forward (captured,
     no extra forward: :class:`r2m.rl.policy_pass.RolloutCapture`);
  3. r = phi((1 - omega(t)) CA(H, h) + omega(t) H) is the reward TRL optimises.
After the policy's optimiser step (``on_step_end``):
  4. h' = h (``r2m.update_feedback: scoring``: with one optimisation pass per generation batch these are the states of
     the policy the loss forward ran, the paper's "last training forward") or the UPDATED policy's states on the same
     responses (``updated``: one backbone-only no-grad forward, timed);
  5. r' recomputed, each group self-labelled (best / worst of r', or of the annotation-time r with
     ``r2m.self_labels: annotation``), GREBT = (1 - alpha) BT + alpha GRE minimised;
  6. AdamW step on the cross-attention and phi only (trunk and policy untouched).

On several processes (``accelerate launch``, :mod:`r2m.distributed`) each rank holds a replica of the head and whole
groups of the batch; the update's gradients are averaged over the ranks weighted by their groups (and GRE's batch std
is the whole batch's), so every replica takes the single-process step on all groups (``docs/scale-out.md``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from transformers import TrainerCallback

from r2m.config import Config
from r2m.distributed import (
    all_gather_rows,
    all_reduce_grads,
    any_rank,
    broadcast_params,
    check_whole_groups,
    is_distributed,
    weighted_mean,
)
from r2m.losses import grebt_terms
from r2m.models.feedback import gaussian_like
from r2m.models.r2m_head import R2MHeadConfig, R2MRewardHead, load_state, save_state
from r2m.models.reward_model import RewardModel
from r2m.rl.numerics import grads_finite, nonfinite_count
from r2m.rl.policy_pass import PolicyMonitor, PolicyPass, sequence_states
from r2m.rl.variants import VARIANTS, Variant  # noqa: F401  (VARIANTS: re-exported for tasks.rl and the tests)
from r2m.schedule import omega


def build_head(
    rm: RewardModel, policy_dim: int, cfg: Config, variant: Variant, trunk: str, policy: str
) -> R2MRewardHead:
    """The R2M head for a variant, phi initialised from the trained vanilla RM's head."""
    hc = R2MHeadConfig(
        rm_dim=rm.hidden_size,
        policy_dim=policy_dim,
        attn_dim=cfg.r2m.attn_dim or rm.hidden_size,
        num_heads=cfg.r2m.num_heads,
        use_attention=variant.use_attention,
        omega_floor=cfg.r2m.omega_floor,
        total_steps=cfg.r2m.horizon or cfg.rl.steps,
        noise=variant.noise,
        out_init_gain=cfg.r2m.out_init_gain,
        trunk=trunk,
        policy=policy,
    )
    torch.manual_seed(cfg.seed)
    return R2MRewardHead(hc, head=rm.head)


class R2MScorer:
    """The reward TRL sees: r = phi(H_fin) with the current policy's feedback (no grad)."""

    def __init__(self, rm: RewardModel, head: R2MRewardHead, variant: Variant, max_length: int, seed: int = 0) -> None:
        self.rm = rm.eval().requires_grad_(False)
        self.head = head
        self.variant = variant
        self.max_length = max_length
        self.generator = torch.Generator().manual_seed(seed)
        self.cache: dict | None = None

    def omega_at(self, step: int) -> float:
        c = self.head.config
        return omega(step, c.total_steps, c.omega_floor) if c.use_attention else 1.0

    def feedback(self, ppass: PolicyPass) -> tuple[Tensor | None, Tensor | None]:
        if not self.variant.use_attention:
            return None, None
        h = ppass.feedback
        if h is None:
            raise RuntimeError("R2M needs the policy's hidden states: PolicyMonitor(keep_feedback=True)")
        if self.variant.noise:
            h = gaussian_like(h, ppass.mask, generator=self.generator)
        return h, ppass.mask

    def __call__(self, texts: Sequence[str], ppass: PolicyPass, step: int, **_) -> Tensor:
        rte = self.rm.embed_texts(texts, max_length=self.max_length)
        h, mask = self.feedback(ppass)
        with torch.no_grad():
            rewards = self.head(rte, h, mask, self.omega_at(step))
        self.cache = {"rte": rte, "step": step, "rewards": rewards, "h": h, "mask": mask}
        return rewards

    def state_dict(self) -> dict:
        """What a resumed run needs beyond the head: the noise generator's state (``r2m_noise``)."""
        return {"noise_generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["noise_generator"])


class ReplayPairs:
    """The BT replay extension (``r2m.replay_weight`` > 0): RM-train pairs scored by the head with the SFT policy's
    feedback (the frozen reference's states), a seeded draw of ``n`` pairs per update.

    The features (RTE [n, D_rm] of the RM trunk, reference states [n, S, D_p]) come from frozen models, so only the
    head's forward carries a gradient. The draw's generator state goes into the checkpoint (:meth:`state_dict`).
    """

    def __init__(self, pairs: Sequence[dict], rm: RewardModel, monitor: PolicyMonitor, render, n: int, cfg: Config):
        if not pairs:
            raise ValueError("r2m.replay_weight > 0 needs RM-train pairs (data/rm_train.jsonl is empty)")
        self.pairs, self.rm, self.monitor, self.render = list(pairs), rm, monitor, render
        self.n, self.max_length = min(n, len(self.pairs)), cfg.reward_model.max_length
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)

    @torch.no_grad()
    def features(self) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        """``{"chosen" | "rejected": (rte, h, mask)}`` of the next draw of pairs."""
        idx = torch.randperm(len(self.pairs), generator=self.generator)[: self.n].tolist()
        rows = [self.pairs[i] for i in idx]
        prompts = [r["prompt"] for r in rows]
        policy_prompts = self.render(prompts)
        out = {}
        for side in ("chosen", "rejected"):
            responses = [r[side] for r in rows]
            rte = self.rm.embed_texts([p + y for p, y in zip(prompts, responses, strict=True)], self.max_length)
            p_ids, c_ids = self.monitor.encode(policy_prompts, responses)
            h, mask = sequence_states(self.monitor.reference, p_ids, c_ids, self.monitor.tokenizer.pad_token_id)
            out[side] = (rte, h, mask)
        return out

    def state_dict(self) -> dict:
        return {"replay_generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["replay_generator"])


def head_optimizer(head: R2MRewardHead, cfg: Config) -> torch.optim.AdamW:
    """AdamW on the cross-attention (weight decay ``r2m.attn_weight_decay``, an extension; 0 by default) and phi
    (none)."""
    groups = [{"params": list(head.head.parameters()), "weight_decay": 0.0}]
    if head.attn is not None:
        groups.insert(0, {"params": list(head.attn.parameters()), "weight_decay": cfg.r2m.attn_weight_decay})
    return torch.optim.AdamW(groups, lr=cfg.r2m.rm_lr)


class R2MUpdater(TrainerCallback):
    """After each policy step: GREBT (plus the optional replay term) on the cross-attention and phi, with the
    scoring-time feedback (default) or the updated policy's.

    Under torch.distributed (world size > 1) every rank runs the update on its own groups and the head's gradients
    are all-reduced, weighted by the ranks' group counts, before clipping and AdamW: the step is the single-process
    step over all groups and the replicas stay identical. A rank holding part of a group is an error
    (:class:`r2m.distributed.PartialGroupError`). The replay term (``r2m.replay_weight``) is the same on every rank
    (same seeded draw, frozen features), so its weighted mean is itself. Without a process group nothing of this
    runs.
    """

    def __init__(
        self, scorer: R2MScorer, monitor: PolicyMonitor, reward_fn, cfg: Config, replay: ReplayPairs | None = None
    ) -> None:
        self.scorer = scorer
        self.monitor = monitor
        self.reward_fn = reward_fn
        self.k = cfg.rl.num_generations
        self.alpha = scorer.variant.alpha if scorer.variant.alpha is not None else cfg.r2m.alpha
        self.updates = cfg.r2m.rm_updates_per_step
        self.grad_clip = cfg.r2m.grad_clip
        self.update_feedback = cfg.r2m.update_feedback
        self.self_labels = cfg.r2m.self_labels
        self.gre_std_floor = cfg.r2m.gre_std_floor
        self.optimizer = head_optimizer(scorer.head, cfg)
        self.replay = replay
        self.replay_weight = cfg.r2m.replay_weight
        self.metrics: dict[str, float] = {}

    def update(self) -> dict[str, float]:
        """One R2M update on the last rollout batch; returns the metrics of the step."""
        batch, cache = self.reward_fn.last_batch, self.scorer.cache
        step = cache["step"]
        w = self.scorer.omega_at(step)
        out = {"r2m_omega": w}
        variant = self.scorer.variant
        if not variant.train or (variant.max_updates is not None and step >= variant.max_updates):
            return out
        t0 = time.perf_counter()
        h, mask = cache["h"], cache["mask"]
        if self.scorer.variant.use_attention and self.update_feedback == "updated":
            h, mask = self.scorer.feedback(self.monitor.forward(batch["prompt_ids"], batch["completion_ids"]))
        t1 = time.perf_counter()
        head = self.scorer.head
        spread = is_distributed()  # the batch's groups are spread over several processes
        groups = self.local_groups(batch, cache) if spread else 0
        labels = cache["rewards"].view(-1, self.k) if self.self_labels == "annotation" else None
        replay = self.replay.features() if self.replay is not None else None
        head.train()
        before = {k: v.detach().clone() for k, v in head.state_dict().items()}  # restored if the update is not finite
        faulty = False
        for _ in range(self.updates):
            rewards = head(cache["rte"], h, mask, w).view(-1, self.k)
            std_floor = self.global_std_floor(rewards) if spread else self.gre_std_floor
            terms = grebt_terms(rewards, self.alpha, std_floor=std_floor, labels=labels)
            loss = terms["grebt"]
            if replay is not None:
                margin = head(*replay["chosen"], w) - head(*replay["rejected"], w)
                terms["replay_bt"] = -torch.nn.functional.logsigmoid(margin).mean()
                loss = loss + self.replay_weight * terms["replay_bt"]
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if spread:  # the gradient of the mean over all ranks' groups, before clipping: the same step everywhere
                all_reduce_grads(head.trainable_parameters(), groups)
            # a non-finite loss or gradient on any rank: no step anywhere, and the head keeps its parameters
            if any_rank(nonfinite_count(loss) > 0 or not grads_finite(head.trainable_parameters())):
                faulty = True
                break
            torch.nn.utils.clip_grad_norm_(head.trainable_parameters(), self.grad_clip)
            self.optimizer.step()
        if not faulty and any_rank(any(nonfinite_count(p) for p in head.trainable_parameters())):
            faulty = True  # finite gradients, but a step that overflowed the parameters
        if faulty:
            self.optimizer.zero_grad(set_to_none=True)
            head.load_state_dict(before)
            self.reward_fn.faults.flag("R2M head update", f"GREBT loss {float(loss.detach()):.4g}; head restored")
        head.eval()
        if spread:  # log the terms over all groups, as one process holding the whole batch would
            names = list(terms)
            values = weighted_mean(torch.stack([terms[k].detach() for k in names]), groups)
            terms = dict(zip(names, values.unbind(), strict=True))
        out.update({f"r2m_{k}": float(v.detach()) for k, v in terms.items()})
        if head.attn is not None:  # how large the feedback's part of H_fin is next to the RM's own part
            with torch.no_grad():
                attended = head.attention_part(cache["rte"], h, mask, w)[1].mean()
                rte_norm = cache["rte"].norm(dim=-1).mean()
                if spread:  # means over all rows of the batch
                    attended, rte_norm = weighted_mean(torch.stack([attended, rte_norm]), cache["rte"].shape[0])
                out["r2m_attention_norm"] = float(attended)
                out["r2m_attention_share"] = float(attended / (w * rte_norm))
        out["r2m_feedback_forward_s"] = t1 - t0
        out["r2m_update_s"] = time.perf_counter() - t0
        return out

    def local_groups(self, batch: dict, cache: dict) -> int:
        """n_r, the groups this rank holds (its weight in the all-reduce); every rank raises
        :class:`r2m.distributed.PartialGroupError` if any holds part of a group."""
        rows = int(cache["rte"].shape[0])  # B_r
        check_whole_groups(rows, self.k, batch.get("prompt_ids"), device=cache["rte"].device)
        return rows // self.k

    def global_std_floor(self, rewards: Tensor) -> float:
        """The ``std_floor`` for :func:`r2m.losses.grebt_terms` on this rank's rewards [n_r, K] that makes its floor
        term f * s_local equal f * s, s = the population std of the WHOLE batch's rewards (all ranks, detached), the
        single-process floor. When this rank's rewards are all tied every group of it is degenerate and the floor is
        unused."""
        f = self.gre_std_floor
        if f <= 0:
            return f
        s_local = rewards.detach().std(unbiased=False)
        s_all = all_gather_rows(rewards.detach().reshape(-1)).std(unbiased=False)  # [sum_r B_r] -> scalar
        if not bool(s_local > 0) or not bool(s_all > 0):
            return f
        return f * float(s_all) / float(s_local)

    def on_train_begin(self, args, state, control, **kwargs):
        """Start every rank's replica from rank 0's head (no-op on one process)."""
        broadcast_params(self.scorer.head.parameters())

    def on_step_end(self, args, state, control, **kwargs):
        if self.reward_fn.last_batch is not None and self.scorer.cache is not None:
            self.metrics = self.update()

    def on_save(self, args, state, control, **kwargs):
        if not getattr(args, "should_save", True):  # the process that writes the checkpoint (rank 0) writes the head
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        extra = {**self.scorer.state_dict(), **(self.replay.state_dict() if self.replay is not None else {})}
        save_state(self.scorer.head, self.optimizer, ckpt, extra=extra)

    def resume(self, checkpoint: Path) -> None:
        """Restore the head, its optimizer and the scorer's generator from a TRL checkpoint this callback saved."""
        extra = load_state(self.scorer.head, self.optimizer, checkpoint)
        if extra is not None:
            self.scorer.load_state_dict(extra)
            if self.replay is not None:
                self.replay.load_state_dict(extra)


def feedback_scorer(
    rm: RewardModel, head: R2MRewardHead, monitor: PolicyMonitor, render, max_length: int = 512, seed: int = 0
):
    """``score(plain_prompts, responses)`` with the R2M head and ``monitor``'s policy as feedback at t = T;
    ``render(prompts)`` turns task prompts into what the policy sees; ``seed``: the noise of an ``r2m_noise`` head."""
    return lambda ps, rs: score_with_feedback(rm, head, monitor, ps, render(ps), rs, max_length=max_length, seed=seed)


@torch.no_grad()
def score_with_feedback(
    rm: RewardModel,
    head: R2MRewardHead,
    monitor: PolicyMonitor,
    rm_prompts: Sequence[str],
    policy_prompts: Sequence[str],
    responses: Sequence[str],
    step: int | None = None,
    batch_size: int = 16,
    max_length: int = 512,
    seed: int = 0,
    parts: list[dict] | None = None,
) -> list[float]:
    """R2M rewards of (prompt, response) with ``monitor``'s policy as feedback; ``step=None`` uses t = T (omega at
    its floor), the evaluation-time setting (docs/method.md). The feedback covers the tokens an RL rollout of the
    response has (:meth:`PolicyMonitor.encode`); a head trained on noise (``r2m_noise``) is scored on noise of the
    same statistics, drawn from a generator seeded with ``seed``. ``parts`` (a list, heads with cross-attention):
    gets one ``{"attention", "attention_norm"}`` per response (:meth:`R2MRewardHead.attention_part`)."""
    c = head.config
    w = omega(c.total_steps if step is None else step, c.total_steps, c.omega_floor) if c.use_attention else 1.0
    generator = torch.Generator().manual_seed(seed)
    out: list[float] = []
    head.eval()
    for i in range(0, len(responses), batch_size):
        sl = slice(i, i + batch_size)
        rte = rm.embed_texts([p + r for p, r in zip(rm_prompts[sl], responses[sl], strict=True)], max_length=max_length)
        h = mask = None
        if c.use_attention:
            ppass = monitor.forward(*monitor.encode(policy_prompts[sl], responses[sl]))
            h, mask = ppass.feedback, ppass.mask
            if c.noise:
                h = gaussian_like(h, mask, generator=generator)
        out.extend(head(rte, h, mask, w).tolist())
        if parts is not None and c.use_attention:
            part, norm = head.attention_part(rte, h, mask, w)
            pairs = zip(part.tolist(), norm.tolist(), strict=True)
            parts.extend({"attention": a, "attention_norm": n} for a, n in pairs)
    return out
