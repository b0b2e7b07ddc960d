"""The vanilla reward model: an LLM trunk + a linear score head phi on the reward token embedding (RTE).

RTE ``H`` = the trunk's last-layer hidden state at the last real token of prompt+response, shape [B, D_rm].
Saved as ``trunk/`` (``save_pretrained``, safetensors) + ``head.safetensors`` + ``reward_model.json`` + the
tokenizer, so it loads without unpickling anything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel

HEAD_FILE = "head.safetensors"
META_FILE = "reward_model.json"


def trunk_of(model: PreTrainedModel) -> PreTrainedModel:
    """The transformer trunk (no LM head) of a causal LM, e.g. ``GPTNeoXModel`` of ``GPTNeoXForCausalLM``."""
    return model.base_model if hasattr(model, "base_model") else model


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index of the last real token per row for right-padded batches: [B, S] -> [B]."""
    return attention_mask.long().sum(dim=1).clamp(min=1) - 1


def pool_last(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Hidden states [B, S, D] at the last real token -> [B, D]."""
    idx = last_token_index(attention_mask)
    return hidden[torch.arange(hidden.size(0), device=hidden.device), idx]


class RewardModel(nn.Module):
    """``r(x, y) = phi(H)`` with ``H`` the trunk's reward token embedding."""

    def __init__(self, trunk: PreTrainedModel, tokenizer, head: nn.Linear | None = None) -> None:
        super().__init__()
        self.trunk = trunk
        self.tokenizer = tokenizer
        self.hidden_size = int(trunk.config.hidden_size)
        # text -> RTE, used only while the trunk is frozen (a 135M trunk featurises ~5 texts/s on 2 CPU cores)
        self.embedding_cache: dict[str, Tensor] | None = None
        self.head = head if head is not None else nn.Linear(self.hidden_size, 1)
        if head is None:
            nn.init.normal_(self.head.weight, std=1.0 / self.hidden_size**0.5)
            nn.init.zeros_(self.head.bias)

    def tokenize(self, texts: Sequence[str], max_length: int = 512) -> dict[str, Tensor]:
        """Right-padded batch, truncated from the left so the response end (the RTE position) is kept."""
        tok = self.tokenizer
        old_side, old_trunc = tok.padding_side, tok.truncation_side
        tok.padding_side, tok.truncation_side = "right", "left"
        try:
            enc = tok(
                list(texts),
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
                add_special_tokens=False,
            )
        finally:
            tok.padding_side, tok.truncation_side = old_side, old_trunc
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Reward token embedding H: [B, S] ids -> [B, D_rm]."""
        out = self.trunk(input_ids=input_ids, attention_mask=attention_mask)
        return pool_last(out.last_hidden_state, attention_mask)

    def share_trunk_with(self, other: RewardModel) -> bool:
        """Use ``other``'s trunk (one copy in memory) when the two trunks and tokenizers are identical, as for two
        score heads on one frozen trunk; returns whether they were. Only for frozen trunks: they are one object after.
        """
        mine, theirs = self.trunk.state_dict(), other.trunk.state_dict()
        same = (
            type(self.trunk) is type(other.trunk)
            and mine.keys() == theirs.keys()
            and all(mine[k].shape == theirs[k].shape and torch.equal(mine[k], theirs[k]) for k in mine)
            and self.tokenizer.get_vocab() == other.tokenizer.get_vocab()
        )
        if same:
            self.trunk = other.trunk
        return same

    def score_embeddings(self, rte: Tensor) -> Tensor:
        """phi(H): [B, D_rm] -> [B]."""
        return self.head(rte).squeeze(-1)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Rewards [B] for a tokenized batch."""
        return self.score_embeddings(self.embed(input_ids, attention_mask))

    @torch.no_grad()
    def embed_texts(
        self, texts: Sequence[str], batch_size: int = 32, max_length: int = 512, progress: bool = False
    ) -> Tensor:
        """RTE for raw texts (prompt + response), no grad: -> [N, D_rm]."""
        from tqdm.auto import tqdm

        self.trunk.eval()
        cache = self.embedding_cache
        todo = list(dict.fromkeys(t for t in texts if cache is None or t not in cache))
        found: dict[str, Tensor] = {}
        dev = next(self.trunk.parameters()).device
        for i in tqdm(range(0, len(todo), batch_size), desc="embed", disable=not progress):
            chunk = todo[i : i + batch_size]
            enc = {k: v.to(dev) for k, v in self.tokenize(chunk, max_length=max_length).items()}
            found.update(zip(chunk, self.embed(**enc), strict=True))
        if cache is not None:
            cache.update(found)
            found = cache
        return torch.stack([found[t] for t in texts]) if texts else torch.zeros(0, self.hidden_size, device=dev)

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str], batch_size: int = 32, max_length: int = 512) -> Tensor:
        """Rewards [N] for raw texts."""
        return self.score_embeddings(self.embed_texts(texts, batch_size, max_length))

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.trunk.save_pretrained(path / "trunk", safe_serialization=True)
        self.tokenizer.save_pretrained(path / "trunk")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, path / HEAD_FILE)
        meta = {"hidden_size": self.hidden_size, "trunk": "trunk", "head": HEAD_FILE, **(extra or {})}
        (path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: str | Path) -> RewardModel:
        path = Path(path)
        meta_file = path / META_FILE
        if not meta_file.exists():
            raise FileNotFoundError(f"{path}: not a saved reward model (no {META_FILE})")
        meta = json.loads(meta_file.read_text())
        trunk = AutoModel.from_pretrained(path / meta["trunk"], use_safetensors=True, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path / meta["trunk"])
        head = nn.Linear(int(meta["hidden_size"]), 1)
        head.load_state_dict(load_file(path / meta["head"]))
        return cls(trunk, tok, head)
