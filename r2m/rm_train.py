"""Bradley-Terry training of the vanilla reward model on (prompt, chosen, rejected) pairs."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from r2m.config import Config, RewardModelConfig
from r2m.models.reward_model import RewardModel
from r2m.paths import Paths


def load_trunk(cfg: Config, paths: Paths, seed: int | None = None) -> RewardModel:
    """The untrained reward model: the ``reward_model.trunk`` (``sft``: the SFT policy's trunk), a fresh score head
    initialised from ``seed`` (default ``cfg.seed``)."""
    src = str(paths.sft) if cfg.reward_model.trunk == "sft" else cfg.reward_model.trunk
    torch.manual_seed(cfg.seed if seed is None else seed)
    tok = AutoTokenizer.from_pretrained(src)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if cfg.reward_model.pretrained_head:
        trunk, head = pretrained_reward_model(src)
        return RewardModel(trunk, tok, head)
    trunk = AutoModel.from_pretrained(src, dtype=torch.float32, use_safetensors=True)
    return RewardModel(trunk, tok)


def pretrained_reward_model(src: str) -> tuple[torch.nn.Module, torch.nn.Linear]:
    """A trained reward model (``*ForSequenceClassification``, one label) as ``(trunk, phi)``: its transformer and
    its own score head, as a ``Linear(D_rm, 1)`` (a head without a bias gets a zero bias: the same scores)."""
    model = AutoModelForSequenceClassification.from_pretrained(src, dtype=torch.float32, use_safetensors=True)
    score = getattr(model, "score", None) or getattr(model, "classifier", None)
    if not isinstance(score, torch.nn.Linear) or score.out_features != 1:
        raise ValueError(f"{src}: reward_model.pretrained_head needs a one-label score head (a Linear to 1 output)")
    head = torch.nn.Linear(score.in_features, 1)
    with torch.no_grad():
        head.weight.copy_(score.weight)
        head.bias.copy_(score.bias if score.bias is not None else torch.zeros(1))
    return model.base_model, head


def _texts(rows: Sequence[dict], key: str) -> list[str]:
    return [r["prompt"] + r[key] for r in rows]


def count_truncated(rm: RewardModel, rows: Sequence[dict], max_length: int) -> int:
    """How many prompt + response texts of the pairs ``rows`` are longer than ``max_length`` tokens (the RM reads
    them without their start)."""
    texts = _texts(rows, "chosen") + _texts(rows, "rejected")
    lengths = rm.tokenizer(texts, add_special_tokens=False, return_length=True)["length"]
    return sum(n > max_length for n in lengths)


def train_reward_model(
    rm: RewardModel, rows: Sequence[dict], cfg: RewardModelConfig, seed: int, progress: bool = True
) -> list[float]:
    """BT-train ``rm`` in place. With ``train_trunk=False`` the trunk is frozen and its embeddings are computed once
    (cached; a cache ``rm`` already has, e.g. another RM's on the same trunk, is kept), so only the head trains (cheap
    even for a 135M trunk). Returns the loss per optimiser step."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    chosen, rejected = _texts(rows, "chosen"), _texts(rows, "rejected")
    if not cfg.train_trunk:
        rm.trunk.requires_grad_(False)
        if rm.embedding_cache is None:  # frozen trunk: later scoring of the same texts reuses these embeddings
            rm.embedding_cache = {}
        e_c = rm.embed_texts(chosen, max_length=cfg.max_length, progress=progress)
        e_r = rm.embed_texts(rejected, max_length=cfg.max_length, progress=progress)
        params = list(rm.head.parameters())
    else:
        params = [p for p in rm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    order = list(range(len(rows)))
    losses: list[float] = []
    n_batches = (len(rows) + cfg.batch_size - 1) // cfg.batch_size
    bar = tqdm(total=cfg.epochs * n_batches, desc="reward_model", disable=not progress)
    rm.train()
    for _ in range(cfg.epochs):
        rng.shuffle(order)
        for b in range(n_batches):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            if cfg.train_trunk:
                enc = rm.tokenize([chosen[i] for i in idx] + [rejected[i] for i in idx], max_length=cfg.max_length)
                r = rm(**enc)
                r_c, r_r = r[: len(idx)], r[len(idx) :]
            else:
                r_c, r_r = rm.score_embeddings(e_c[idx]), rm.score_embeddings(e_r[idx])
            loss = -F.logsigmoid(r_c - r_r).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(loss))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    rm.eval()
    return losses


@torch.no_grad()
def score_pairs(rm: RewardModel, rows: Sequence[dict], max_length: int = 512) -> tuple[list[float], list[float]]:
    """RM scores of chosen and rejected for each pair."""
    c = rm.score_texts(_texts(rows, "chosen"), max_length=max_length).tolist()
    r = rm.score_texts(_texts(rows, "rejected"), max_length=max_length).tolist()
    return c, r
