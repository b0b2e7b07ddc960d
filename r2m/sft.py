"""Supervised fine-tuning of the reference policy: next-token loss on the completion tokens only."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from r2m.config import SFTConfig


def encode_example(tok, prompt: str, completion: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on the prompt) for prompt + completion + EOS; the prompt is cut from the left."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    c = c[:max_length]
    p = p[max(0, len(p) - (max_length - len(c))) :]
    return p + c, [-100] * len(p) + c


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Tensor]:
    """Right-pad a list of (ids, labels) to a batch: input_ids / attention_mask / labels [B, S]."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10%: a multiplier in [0.1, 1]."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_sft(model, tok, rows: Sequence[dict], cfg: SFTConfig, seed: int, progress: bool = True) -> list[float]:
    """Train ``model`` in place on rows ``{"prompt", "completion"}``; returns the loss per step."""
    if cfg.steps <= 0:
        return []
    rng = random.Random(seed)
    torch.manual_seed(seed)
    encoded = [encode_example(tok, r["prompt"], r["completion"], cfg.max_length) for r in rows]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, cfg.steps, cfg.warmup_steps))
    model.train()
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc="sft", disable=not progress)
    for _ in bar:
        batch = collate(rng.sample(encoded, min(cfg.batch_size, len(encoded))), tok.pad_token_id)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses
