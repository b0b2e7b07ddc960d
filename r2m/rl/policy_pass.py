"""One no-grad forward of the policy (and the frozen reference) over prompt + completion.

It yields the sequence KL estimate to the reference (always logged, whatever the RL loss's beta) and, for R2M, the
policy's last-layer hidden states ("policy feedback") over query + response with their padding mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PolicyPass:
    """Results for a batch of B sequences (right-padded to length S)."""

    kl: Tensor  # [B] sum over completion tokens of log pi(y_t) - log pi_ref(y_t) (k1 estimator)
    feedback: Tensor | None  # [B, S, D_p] last-layer hidden states of the policy, or None
    mask: Tensor  # [B, S] 1 = real token


def build_batch(
    prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], pad_id: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded input_ids / attention_mask [B, S] and a completion mask [B, S] (1 on completion tokens)."""
    seqs = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids, strict=True)]
    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    comp = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (p, s) in enumerate(zip(prompt_ids, seqs, strict=True)):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
        comp[i, len(p) : len(s)] = 1
    return ids, mask, comp


def completion_logprobs(logits: Tensor, ids: Tensor, comp_mask: Tensor) -> Tensor:
    """Sum of log-probs of completion tokens: logits [B, S, V], ids/comp_mask [B, S] -> [B]."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tok = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (tok * comp_mask[:, 1:]).sum(dim=1)


class PolicyMonitor:
    """Runs the policy and the reference on the rollout batch (no grad)."""

    def __init__(self, tokenizer, reference, keep_feedback: bool = False, max_prompt_tokens: int = 1024) -> None:
        self.tokenizer = tokenizer
        self.reference = reference.eval().requires_grad_(False)
        self.policy = None
        self.keep_feedback = keep_feedback
        self.max_prompt_tokens = max_prompt_tokens

    def attach(self, policy) -> None:
        """Give the monitor the live policy the trainer optimises."""
        self.policy = policy

    def prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        return [p[-self.max_prompt_tokens :] for p in enc]

    @torch.no_grad()
    def run(
        self, prompts: Sequence[str], completion_ids: Sequence[Sequence[int]], with_reference: bool = True
    ) -> PolicyPass:
        """Forward the policy (and the reference, for KL, unless ``with_reference=False``) over prompt + completion."""
        if self.policy is None:
            raise RuntimeError("PolicyMonitor.attach(policy) must be called before the first rollout")
        ids, mask, comp = build_batch(self.prompt_ids(prompts), completion_ids, self.tokenizer.pad_token_id)
        dev = next(self.policy.parameters()).device
        ids, mask, comp = ids.to(dev), mask.to(dev), comp.to(dev)
        out = self.policy(input_ids=ids, attention_mask=mask, output_hidden_states=self.keep_feedback)
        logp = completion_logprobs(out.logits, ids, comp)
        if with_reference:
            kl = logp - completion_logprobs(self.reference(input_ids=ids, attention_mask=mask).logits, ids, comp)
        else:
            kl = torch.full_like(logp, float("nan"))
        feedback = out.hidden_states[-1].float() if self.keep_feedback else None
        return PolicyPass(kl=kl.cpu(), feedback=feedback, mask=mask)
