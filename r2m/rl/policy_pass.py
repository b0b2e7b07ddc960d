"""The policy's view of a rollout batch: its last-layer hidden states ("policy feedback") and the KL to the reference.

Feedback convention: the last-layer hidden states over x + y[:-1], i.e. the states the response was sampled from (the
state at position t produced token t + 1). They are exactly what the policy computes while it generates, so during RL
they are captured from TRL's own generation forward (:class:`RolloutCapture`) at no extra forward; off the RL loop
(evaluation, R2M's updated-policy option) one backbone forward over the same tokens gives the same states
(:func:`sequence_states`; evaluation appends EOS to a response, as RL completions end with it).

With vLLM generating the rollouts (``rl.use_vllm``) the policy's ``generate`` never runs and nothing is captured; the
monitor then recomputes the same states with one backbone forward of the trainer's policy
(``PolicyMonitor(recompute_feedback=True)``), timed.

A response of n tokens thus contributes n - 1 response positions; the n states that produced its tokens (the last
prompt position and those n - 1) give the policy's log-probs of the response for the KL (:func:`response_logps`, the
LM head on those n positions only).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PolicyPass:
    """Results for a batch of B sequences (right-padded to length S)."""

    kl: Tensor  # [B] sum over response tokens of log pi(y_t) - log pi_ref(y_t) (k1); NaN where not measured
    feedback: Tensor | None  # [B, S, D_p] last-layer hidden states over x + y[:-1] (float32), or None
    mask: Tensor  # [B, S] 1 = real position
    prompt_ids: list[list[int]]  # the prompt tokens as the policy saw them (TRL's tokenisation)
    rows: list[int]  # the rows whose KL was measured
    feedback_forward_s: float | None = None  # seconds of the backbone forward that recomputed the feedback (vLLM)


def pad_rows(rows: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """[L_i, D] rows -> right-padded [B, S, D] (zeros) and mask [B, S] (S = max L_i, at least 1)."""
    width = max(1, max(r.shape[0] for r in rows))
    d = rows[0].shape[-1]
    out = rows[0].new_zeros((len(rows), width, d))
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=rows[0].device)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = 1
    return out, mask


def feedback_ids(
    prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], pad_id: int
) -> tuple[Tensor, Tensor]:
    """Right-padded token ids of x + y[:-1] and their mask, both [B, S]: the positions the feedback covers."""
    seqs = [list(p) + list(c)[:-1] for p, c in zip(prompt_ids, completion_ids, strict=True)]
    if any(not p for p in prompt_ids) or any(not c for c in completion_ids):
        raise ValueError("every sequence needs at least one prompt token and one response token")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def check_plain_lm_head(model) -> None:
    """:func:`response_logps` applies the output embedding alone: refuse models whose logits are more than that."""
    cfg = model.config
    for key in ("final_logit_softcapping", "logit_scale"):
        if getattr(cfg, key, None) not in (None, 1.0):
            raise NotImplementedError(f"{type(model).__name__}: {key}={getattr(cfg, key)} is not supported (KL)")


def sequence_states(model, prompt_ids, completion_ids, pad_id: int) -> tuple[Tensor, Tensor]:
    """One backbone forward (no LM head) of ``model`` over x + y[:-1]: states [B, S, D] (float32), mask [B, S]."""
    ids, mask = feedback_ids(prompt_ids, completion_ids, pad_id)
    dev = next(model.parameters()).device
    ids, mask = ids.to(dev), mask.to(dev)
    out = model.base_model(input_ids=ids, attention_mask=mask)
    return out.last_hidden_state.float(), mask


def response_logps(model, states: Tensor, prompt_lens: Sequence[int], completion_ids) -> Tensor:
    """Sum of log-probs (temperature 1) of each response from the states that produced it.

    Args:
        model: the causal LM whose output embedding (LM head) maps states to logits.
        states: [B, S, D] states over x + y[:-1] (right-padded).
        prompt_lens: [B] prompt lengths p_i; completion_ids: B lists of n_i tokens.
    Returns:
        [B] float32: sum_t log p(y_t | states[p_i - 1 + t]) over t = 0..n_i - 1.
    """
    lens = [len(c) for c in completion_ids]
    n = max(lens)
    dev = states.device
    pos = torch.zeros((len(lens), n), dtype=torch.long)
    tgt = torch.zeros((len(lens), n), dtype=torch.long)
    valid = torch.zeros((len(lens), n), dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompt_lens, completion_ids, strict=True)):
        pos[i, : len(c)] = torch.arange(p - 1, p - 1 + len(c))
        tgt[i, : len(c)] = torch.tensor(list(c), dtype=torch.long)
        valid[i, : len(c)] = True
    pos, tgt, valid = pos.to(dev), tgt.to(dev), valid.to(dev)
    picked = states.gather(1, pos[..., None].expand(-1, -1, states.shape[-1]))  # [B, n, D]
    head = model.get_output_embeddings()
    logits = head(picked.to(head.weight.dtype)).float()  # [B, n, V]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, tgt[..., None]).squeeze(-1)  # [B, n]
    return (logp * valid).sum(dim=1)


class RolloutCapture:
    """Keeps the policy's last-layer hidden states from its ``generate`` call (TRL's rollout).

    ``generate`` of the policy object is wrapped: while it runs, a hook on the backbone keeps the prefill's prompt
    ids, mask and states [B, P, D] (left-padded, as TRL pads) and the state of every fed token [B, 1, D]. :meth:`take`
    turns them into the right-padded feedback of x + y[:-1] for the completions TRL kept. When every prompt of the
    batch has the same length, ``generate`` runs the backbone without a mask (nothing is padded): all ones.
    """

    def __init__(self, policy) -> None:
        self.policy = policy
        self._generate = policy.generate
        policy.generate = self.generate  # instance attribute: TRL calls unwrapped_model.generate(...)
        self.last: dict | None = None

    def generate(self, *args, **kwargs):
        inputs: dict = {}
        chunks: list[Tensor] = []

        def before(module, a, kw):
            if not inputs:
                inputs["ids"] = kw.get("input_ids", a[0] if a else None)
                inputs["mask"] = kw.get("attention_mask")

        def after(module, a, kw, out):
            chunks.append(out[0].detach())

        backbone = self.policy.base_model
        hooks = [
            backbone.register_forward_pre_hook(before, with_kwargs=True),
            backbone.register_forward_hook(after, with_kwargs=True),
        ]
        try:
            result = self._generate(*args, **kwargs)
        finally:
            for h in hooks:
                h.remove()
        if inputs.get("ids") is None:
            raise RuntimeError("rollout capture: generate() ran the backbone without input_ids")
        if inputs.get("mask") is None:  # generate drops an all-ones mask (prompts of one length): all positions real
            inputs["mask"] = torch.ones_like(inputs["ids"])
        if any(c.shape[1] != 1 for c in chunks[1:]):
            raise RuntimeError("rollout capture needs generation with the KV cache (one new position per step)")
        self.last = {"ids": inputs["ids"], "mask": inputs["mask"], "states": torch.cat(chunks, dim=1)}
        return result

    def take(self, completion_ids: Sequence[Sequence[int]]) -> tuple[list[list[int]], Tensor, Tensor]:
        """(prompt ids, feedback [B, S, D] float32, mask [B, S]) of the last rollout; the capture is consumed."""
        if self.last is None:
            raise RuntimeError("no rollout hidden states captured for this batch (did TRL generate with the policy?)")
        last, self.last = self.last, None
        ids, pmask, states = last["ids"], last["mask"], last["states"]
        b, width = ids.shape
        if len(completion_ids) != b:
            raise RuntimeError(f"rollout capture: {b} prompts generated, {len(completion_ids)} completions scored")
        prompt_ids, rows = [], []
        for i, c in enumerate(completion_ids):
            p = int(pmask[i].sum())
            if not bool(pmask[i, width - p :].all()) or not c or width + len(c) - 1 > states.shape[1]:
                raise RuntimeError(f"rollout capture: row {i} does not match the generated batch")
            prompt_ids.append(ids[i, width - p :].tolist())
            rows.append(torch.cat([states[i, width - p : width], states[i, width : width + len(c) - 1]]))
        feedback, mask = pad_rows(rows)
        return prompt_ids, feedback.float(), mask


def monitored_step(step: int, every: int, last: int | None = None) -> bool:
    """Whether the per-step monitor measures ``step``: steps 0, ``every``, 2 ``every``, ... and ``last``."""
    return step % every == 0 or step == last


def sample_rows(batch: int, k: int, n: int) -> list[int]:
    """The ``n`` rows of a batch of groups of ``k`` that the per-step monitor measures: the first response of every
    group, then the second, ...; ``n = 0`` or ``n >= batch``: all rows."""
    if n <= 0 or n >= batch:
        return list(range(batch))
    order = [g * k + j for j in range(k) for g in range(batch // k)] + list(range(batch // k * k, batch))
    return sorted(order[:n])


class PolicyMonitor:
    """The policy's feedback and KL for a rollout batch, at the cost of what must run.

    During RL (:meth:`rollout`) the feedback comes from the generation forward (no pass of the policy at all); the
    KL needs the reference's log-probs, so the reference runs, as a backbone forward plus the LM head on response
    positions, on ``monitor_sample`` rows of the batch (:func:`sample_rows`; 0 = all), on the steps
    :func:`monitored_step` names (every ``monitor_every``-th and ``last_step``); other steps measure no row.

    ``recompute_feedback`` (vLLM rollouts, which never call the policy's ``generate``): :meth:`rollout` runs one
    no-grad backbone forward of the policy over x + y[:-1] instead, on every row when the feedback is kept, else on
    the monitored rows only (none on a skipped step).
    """

    def __init__(
        self,
        tokenizer,
        reference,
        keep_feedback: bool = False,
        monitor_sample: int = 0,
        k: int = 1,
        monitor_every: int = 1,
        last_step: int | None = None,
        recompute_feedback: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.recompute_feedback = recompute_feedback
        self.reference = reference.eval().requires_grad_(False)
        check_plain_lm_head(reference)
        self.policy = None
        self.capture: RolloutCapture | None = None
        self.keep_feedback = keep_feedback
        self.monitor_sample = monitor_sample
        self.k = k
        self.monitor_every = monitor_every
        self.last_step = last_step

    def attach(self, policy, capture: bool = True) -> None:
        """Give the monitor the live policy the trainer optimises; ``capture``: keep its rollouts' hidden states
        (:class:`RolloutCapture`; off where the monitor only runs :meth:`forward`, as in evaluation)."""
        check_plain_lm_head(policy)
        self.policy = policy
        self.capture = RolloutCapture(policy) if capture else None

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids as an RL rollout has them: the prompt tokenised the way TRL does (the tokenizer's special
        tokens included), the response without special tokens and ending with EOS."""
        tok = self.tokenizer
        p = [list(x) for x in tok(list(prompts))["input_ids"]]
        r = [list(x) + [tok.eos_token_id] for x in tok(list(responses), add_special_tokens=False)["input_ids"]]
        return p, r

    @torch.no_grad()
    def kl(self, states: Tensor, prompt_ids, completion_ids, rows: Sequence[int]) -> Tensor:
        """[B] KL (k1, summed over the response) on ``rows`` from the policy's ``states`` [B, S, D]; NaN elsewhere."""
        kl = torch.full((len(completion_ids),), float("nan"))
        if not rows:
            return kl
        p = [prompt_ids[i] for i in rows]
        c = [completion_ids[i] for i in rows]
        lens = [len(x) for x in p]
        pol = response_logps(self.policy, states[list(rows)], lens, c)
        ref_states, _ = sequence_states(self.reference, p, c, self.tokenizer.pad_token_id)
        kl[list(rows)] = (pol - response_logps(self.reference, ref_states, lens, c)).float().cpu()
        return kl

    @torch.no_grad()
    def rollout(
        self, completion_ids: Sequence[Sequence[int]], step: int = 0, prompts: Sequence[str] | None = None
    ) -> PolicyPass:
        """The pass of the rollout TRL just generated at ``step``: captured feedback, KL on the monitored rows (none
        on a step the monitor skips). ``prompts`` (the prompts as the policy saw them) are read only with
        ``recompute_feedback``."""
        if self.recompute_feedback:
            return self.recomputed(completion_ids, step, prompts)
        if self.capture is None:
            raise RuntimeError("PolicyMonitor.attach(policy) must be called before the first rollout")
        prompt_ids, states, mask = self.capture.take(completion_ids)
        measured = monitored_step(step, self.monitor_every, self.last_step)
        rows = sample_rows(len(completion_ids), self.k, self.monitor_sample) if measured else []
        kl = self.kl(states, prompt_ids, completion_ids, rows)
        feedback = states if self.keep_feedback else None
        return PolicyPass(kl=kl, feedback=feedback, mask=mask, prompt_ids=prompt_ids, rows=rows)

    @torch.no_grad()
    def recomputed(
        self, completion_ids: Sequence[Sequence[int]], step: int, prompts: Sequence[str] | None
    ) -> PolicyPass:
        """:meth:`rollout` without a capture (vLLM rollouts): the prompts tokenised as TRL tokenises them for vLLM
        (the tokenizer's special tokens included), then one timed backbone forward of the policy over x + y[:-1] on
        the rows that need its states: all of them when the feedback is kept, else the monitored rows."""
        if self.policy is None:
            raise RuntimeError("PolicyMonitor.attach(policy) must be called before the first rollout")
        if prompts is None or len(prompts) != len(completion_ids):
            raise ValueError("recomputing the policy feedback needs the batch's prompts, one per completion")
        prompt_ids = [list(x) for x in self.tokenizer(list(prompts))["input_ids"]]
        measured = monitored_step(step, self.monitor_every, self.last_step)
        rows = sample_rows(len(completion_ids), self.k, self.monitor_sample) if measured else []
        pad = self.tokenizer.pad_token_id
        _, mask = feedback_ids(prompt_ids, completion_ids, pad)
        need = list(range(len(completion_ids))) if self.keep_feedback else rows
        kl = torch.full((len(completion_ids),), float("nan"))
        feedback, seconds = None, None
        if need:
            p, c = [prompt_ids[i] for i in need], [completion_ids[i] for i in need]
            t0 = time.perf_counter()
            states, sub_mask = sequence_states(self.policy, p, c, pad)
            seconds = time.perf_counter() - t0
            if self.keep_feedback:  # need = every row: the states are the batch's feedback
                feedback, mask = states, sub_mask
                kl = self.kl(states, prompt_ids, completion_ids, rows)
            elif rows:  # need = rows: the KL of the sub-batch, put back in place
                kl[rows] = self.kl(states, p, c, list(range(len(rows))))
        return PolicyPass(
            kl=kl, feedback=feedback, mask=mask, prompt_ids=prompt_ids, rows=rows, feedback_forward_s=seconds
        )

    @torch.no_grad()
    def forward(self, prompt_ids, completion_ids, with_reference: bool = False) -> PolicyPass:
        """One backbone forward of the policy over x + y[:-1] (evaluation, R2M's updated-policy option)."""
        if self.policy is None:
            raise RuntimeError("PolicyMonitor.attach(policy) must be called first")
        states, mask = sequence_states(self.policy, prompt_ids, completion_ids, self.tokenizer.pad_token_id)
        rows = list(range(len(completion_ids))) if with_reference else []
        kl = self.kl(states, prompt_ids, completion_ids, rows)
        return PolicyPass(kl=kl, feedback=states, mask=mask, prompt_ids=[list(p) for p in prompt_ids], rows=rows)
