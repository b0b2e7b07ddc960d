"""Batched sampling / greedy decoding from a causal LM (left padding), returning completion texts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm


@torch.no_grad()
def generate(
    model,
    tok,
    prompts: Sequence[str],
    max_new_tokens: int = 48,
    greedy: bool = True,
    temperature: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
    max_prompt_tokens: int | None = None,
) -> list[str]:
    """Complete each prompt; returns the decoded completions (special tokens stripped)."""
    model.eval()
    torch.manual_seed(seed)
    old_side, old_trunc = tok.padding_side, tok.truncation_side
    tok.padding_side, tok.truncation_side = "left", "left"
    out: list[str] = []
    try:
        for i in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress):
            enc = tok(
                list(prompts[i : i + batch_size]),
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
                truncation=max_prompt_tokens is not None,
                max_length=max_prompt_tokens,
            )
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=not greedy,
                temperature=temperature if not greedy else None,
                top_k=0 if not greedy else None,
                top_p=1.0 if not greedy else None,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            out.extend(tok.batch_decode(new, skip_special_tokens=True))
    finally:
        tok.padding_side, tok.truncation_side = old_side, old_trunc
    return out
