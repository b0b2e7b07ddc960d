"""Local chat-LM judge on toy models: the SmolLM2 tokenizer (chat template, loaded offline from the GGUF once) with
a tiny random Llama sized to its vocabulary, and a scripted stand-in whose replies and logits are planned."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from r2m.config import JudgeConfig
from r2m.judges.base import PairwiseItem
from r2m.judges.cache import ReplyCache
from r2m.judges.local import LocalChatJudge, choice_token_ids, forced_context, strip_partial_verdict
from r2m.judges.templates import load_template

TEMPLATE = load_template("tldr")
ITEMS = [
    PairwiseItem(str(i), f"POST-{i}: my cat knocks {'cups ' * (3 * i)}off the table.", f"SUM-A-{i}", f"SUM-B-{i}")
    for i in range(5)
]


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """The SmolLM2 tokenizer (~7 s from the GGUF), saved once so each test gets a fresh copy in ~0.2 s."""
    from r2m.models.builders import SMOLLM2_GGUF, smollm2_gguf_dir

    d = tmp_path_factory.mktemp("smollm2_tokenizer")
    AutoTokenizer.from_pretrained(smollm2_gguf_dir(), gguf_file=SMOLLM2_GGUF).save_pretrained(d)
    return d


@pytest.fixture
def tok(tokenizer):
    t = AutoTokenizer.from_pretrained(tokenizer)
    t.pad_token = t.pad_token or t.eos_token
    return t


def tiny_llama(tok, seed: int = 0) -> LlamaForCausalLM:
    """2 layers, hidden 16, 49152-token vocab; init scale 0.3 so outputs depend on the input (0.02 is near uniform)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.3,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(config)


class ScriptedLM(torch.nn.Module):
    """A causal-LM stand-in: ``generate`` answers each prompt with the reply whose key occurs in it (EOS appended
    unless the reply is cut at ``max_new_tokens``); ``forward`` gives the " B" token logit ``log 3`` over zeros, so
    the forced answer is P(A), P(B) = 1/4, 3/4. Records what it was shown."""

    def __init__(self, tok, replies: dict[str, str]) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the judge a device
        self.tok, self.replies = tok, replies
        self.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id)
        self.prompts: list[str] = []
        self.forced_contexts: list[str] = []

    def generate(self, input_ids, attention_mask, generation_config):
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            prompt = self.tok.decode(ids[mask.bool()])
            self.prompts.append(prompt)
            reply = next(r for k, r in self.replies.items() if k in prompt)
            new = self.tok.encode(reply, add_special_tokens=False)[: generation_config.max_new_tokens]
            rows.append(new + [self.tok.eos_token_id] * (len(new) < generation_config.max_new_tokens))
        width = max(map(len, rows))
        new = torch.tensor([r + [self.tok.pad_token_id] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, new], dim=1)

    def forward(self, input_ids, attention_mask, position_ids=None):
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            self.forced_contexts.append(self.tok.decode(ids[mask.bool()]))
        logits = torch.zeros(*input_ids.shape, len(self.tok))
        logits[..., self.tok.encode(" B", add_special_tokens=False)[0]] = math.log(3.0)
        return SimpleNamespace(logits=logits)


def count_forward_calls(model: torch.nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_prompt_has_template_post_and_responses_in_order_for_both_orders(tok) -> None:
    lm = ScriptedLM(tok, {"POST-": "Comparison: fine.\nPreferred: A"})
    judge = LocalChatJudge(lm, tok, TEMPLATE, model_id="scripted", batch_size=4)
    verdicts = judge.judge(ITEMS[:2])
    assert len(lm.prompts) == 4 and [v.consistent for v in verdicts] == [False, False]  # "A" in both orders: a tie
    for item in ITEMS[:2]:
        for first, second in ((item.response_a, item.response_b), (item.response_b, item.response_a)):
            seen = next(p for p in lm.prompts if item.prompt in p and p.index(first) < p.index(second))
            assert "Which of the following summaries does a better job" in seen
            assert seen.index(item.prompt) < seen.index(f"Summary A:\n{first}") < seen.index(f"Summary B:\n{second}")
            assert seen.startswith("<|im_start|>") and seen.endswith("<|im_start|>assistant\n")


def test_left_padding_matches_batch_size_one_and_restores_state(tok) -> None:
    lm = tiny_llama(tok)
    lm.train()
    tok.padding_side = "right"
    outputs = {}
    for answer in ("generate", "forced"):
        for bs in (1, 8):
            judge = LocalChatJudge(lm, tok, TEMPLATE, model_id="tiny", answer=answer, max_new_tokens=6, batch_size=bs)
            outputs[answer, bs] = judge.judge_batch(ITEMS)
    assert len({v.raw for v in outputs["generate", 8]}) > 1  # the toy model's replies depend on the prompt
    assert [v.raw for v in outputs["generate", 8]] == [v.raw for v in outputs["generate", 1]]
    for one, many in zip(outputs["forced", 1], outputs["forced", 8], strict=True):
        assert many.preferred == one.preferred and many.score_a == pytest.approx(one.score_a, abs=1e-5)
    assert tok.padding_side == "right" and lm.training


def test_parseable_reply_is_used_and_unparseable_is_invalid_with_raw_text(tok) -> None:
    replies = {"POST-0": "Comparison: B is on topic.\nPreferred: B", "POST-1": "I like both summaries a lot."}
    judge = LocalChatJudge(ScriptedLM(tok, replies), tok, TEMPLATE, model_id="scripted", max_new_tokens=64)
    good, bad = judge.judge_batch(ITEMS[:2])
    assert (good.preferred, good.reason, good.raw) == ("B", "B is on topic.", replies["POST-0"])
    assert bad.preferred == "invalid" and bad.raw == replies["POST-1"]
    assert "unparseable" in bad.reason and "truncated" not in bad.reason
    assert bad.score_a is None and bad.score_b is None


def test_reply_cut_at_max_new_tokens_says_truncated(tok) -> None:
    long_reply = "Comparison: " + "summary A is longer and summary B is shorter, " * 10 + "\nPreferred: A"
    judge = LocalChatJudge(ScriptedLM(tok, {"POST-": long_reply}), tok, TEMPLATE, model_id="s", max_new_tokens=8)
    (v,) = judge.judge_batch(ITEMS[:1])
    assert v.preferred == "invalid" and "truncated at max_new_tokens=8" in v.reason
    assert v.raw and long_reply.startswith(v.raw)


def test_forced_answer_cuts_partial_verdict_and_compares_a_b(tok) -> None:
    replies = {"POST-0": "Comparison: A is vague.\nPreferred: maybe", "POST-1": "Comparison: x.\nPreferred: A"}
    lm = ScriptedLM(tok, replies)
    judge = LocalChatJudge(lm, tok, TEMPLATE, model_id="scripted", answer="forced", max_new_tokens=64)
    forced, parsed = judge.judge_batch(ITEMS[:2])
    assert (forced.preferred, forced.score_a, forced.score_b) == ("B", pytest.approx(0.25), pytest.approx(0.75))
    assert "forced answer B" in forced.reason and "forced" in forced.raw and forced.raw.startswith(replies["POST-0"])
    (context,) = lm.forced_contexts  # the parseable reply is not forced
    assert context.endswith("<|im_start|>assistant\nComparison: A is vague.\nPreferred:")
    assert (parsed.preferred, parsed.score_a) == ("A", None)
    assert judge.usage()["forced"] == 1


def test_forced_mode_on_a_random_model_always_answers_a_or_b(tok) -> None:
    judge = LocalChatJudge(tiny_llama(tok, seed=1), tok, TEMPLATE, model_id="tiny", answer="forced", max_new_tokens=4)
    verdicts = judge.judge_batch(ITEMS + [item.swapped() for item in ITEMS], progress=True)
    for v in verdicts:
        assert v.preferred in ("A", "B") and "forced" in v.reason
        assert v.score_a + v.score_b == pytest.approx(1.0) and 0 < v.score_a < 1


def run_with_cache(lm, tok, calls: list[int], cache_path, answer: str):
    """Judge ITEMS[:3] in both orders with a fresh handle on the cache: (verdicts, forward calls, usage, records)."""
    cache = ReplyCache(cache_path)
    judge = LocalChatJudge(lm, tok, TEMPLATE, model_id="tiny", answer=answer, max_new_tokens=4, cache=cache)
    before = calls[0]
    verdicts = judge.judge(ITEMS[:3])
    return verdicts, calls[0] - before, judge.usage(), len(cache)


def test_cache_hits_skip_the_model_and_give_identical_verdicts(tok, tmp_path) -> None:
    lm = tiny_llama(tok)
    calls = count_forward_calls(lm)
    first, n1, u1, len1 = run_with_cache(lm, tok, calls, tmp_path / "c.sqlite", "forced")
    assert n1 > 0 and (u1["generated"], u1["cache_hits"]) == (6, 0)
    assert len1 == 12  # 6 forced records + their 6 generations under the generate key
    second, n2, u2, len2 = run_with_cache(lm, tok, calls, tmp_path / "c.sqlite", "forced")
    assert (n2, u2["generated"], u2["cache_hits"], u2["prompt_tokens"], len2) == (0, 0, 6, 0, 12)
    assert second == first
    generated, n3, u3, _ = run_with_cache(lm, tok, calls, tmp_path / "c.sqlite", "generate")
    assert (n3, u3["cache_hits"]) == (0, 6)  # the answer mode is in the key, but forced mode stored the generations
    assert all(g.raw.splitlines()[0] in f.raw for g, f in zip(generated, first, strict=True))  # same [AB] reply


def test_forced_mode_reuses_cached_generations(tok, tmp_path) -> None:
    lm = tiny_llama(tok)
    calls = count_forward_calls(lm)
    _, n1, u1, _ = run_with_cache(lm, tok, calls, tmp_path / "c.sqlite", "generate")
    assert n1 > 1 and u1["generated"] == 6
    forced, n2, u2, len2 = run_with_cache(lm, tok, calls, tmp_path / "c.sqlite", "forced")
    assert (u2["generated"], u2["generations_reused"], u2["cache_hits"], u2["forced"]) == (0, 6, 0, 6)
    assert n2 == 1 and len2 == 12  # one forward pass: the forced step for the 6 prompts in one batch
    assert all(v.score_a is not None for v in forced)


def test_choice_tokens_for_smollm2_and_other_vocabularies(tok) -> None:
    smol = choice_token_ids(tok, "Preferred")
    assert (smol.suffix, tok.decode([smol.id_a]), tok.decode([smol.id_b])) == (":", " A", " B")

    class CharTokenizer:  # splits the space off the letter: falls back to ": " + "A"
        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return [ord(c) for c in text]

    char = choice_token_ids(CharTokenizer(), "Preferred")
    assert (char.suffix, char.id_a, char.id_b) == (": ", ord("A"), ord("B"))

    class SplitTokenizer(CharTokenizer):  # every letter is two tokens
        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return [t for c in text for t in (ord(c), 0)]

    with pytest.raises(ValueError, match="single tokens"):
        choice_token_ids(SplitTokenizer(), "Preferred")


def test_forced_context_strips_partial_verdict_lines() -> None:
    assert strip_partial_verdict("Comparison: ok.\n**Preferred:** A or B\nmore", "Preferred") == "Comparison: ok."
    assert forced_context("<p>", "Comparison: ok.\n", "Preferred") == "<p>Comparison: ok.\nPreferred:"
    assert forced_context("<p>", "Preferred: C", "Preferred") == "<p>Preferred:"


def test_describe_and_validation(tok) -> None:
    lm = tiny_llama(tok)
    judge = LocalChatJudge(lm, tok, TEMPLATE, model_id="tiny", answer="forced", max_new_tokens=32, batch_size=3)
    assert judge.describe() == {
        "kind": "local",
        "model_id": "tiny",
        "template": "tldr",
        "template_digest": TEMPLATE.digest,
        "answer": "forced",
        "max_new_tokens": 32,
        "batch_size": 3,
        "decoding": "greedy",
        "cache": "",
    }
    with pytest.raises(ValueError, match="answer mode"):
        LocalChatJudge(lm, tok, TEMPLATE, model_id="tiny", answer="sample")


def test_from_config_loads_a_local_directory(tok, tmp_path) -> None:
    tiny_llama(tok).save_pretrained(tmp_path / "judge_lm")
    tok.save_pretrained(tmp_path / "judge_lm")
    jc = JudgeConfig(kind="local", local_model="judge_lm", local_answer="forced", local_batch_size=2, max_tokens=5)
    judge = LocalChatJudge.from_config(jc, workdir=tmp_path)
    assert judge.describe()["model_id"].startswith("judge_lm@") and judge.describe()["batch_size"] == 2
    assert judge.cache is not None and judge.cache.path == tmp_path / "judge_cache.sqlite"
    assert [v.preferred in ("A", "B", "tie") for v in judge.judge(ITEMS[:1])] == [True]
    with pytest.raises(ValueError, match="temperature"):
        LocalChatJudge.from_config(JudgeConfig(kind="local", local_model="judge_lm", temperature=0.7), tmp_path)


def test_weights_fingerprint_changes_when_the_weights_change(tmp_path):
    import os

    from r2m.judges.local import weights_fingerprint

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    first = weights_fingerprint(tmp_path)
    assert weights_fingerprint(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"y" * 11)  # retrained into the same directory
    os.utime(tmp_path / "model.safetensors", ns=(1, 1))
    assert weights_fingerprint(tmp_path) != first


def test_direct_mode_answers_right_after_the_prompt_without_generating(tok) -> None:
    lm = ScriptedLM(tok, {"POST-": "never generated"})
    judge = LocalChatJudge(lm, tok, TEMPLATE, model_id="scripted", answer="direct", max_new_tokens=64)
    verdicts = judge.judge_batch(ITEMS[:2])
    assert lm.prompts == []  # no generation at all
    assert len(lm.forced_contexts) == 2
    assert all(c.endswith("<|im_start|>assistant\nPreferred:") for c in lm.forced_contexts)
    for v in verdicts:
        assert (v.preferred, v.score_a, v.score_b) == ("B", pytest.approx(0.25), pytest.approx(0.75))
        assert "direct answer" in v.reason
    assert judge.usage()["generated"] == 0 and judge.usage()["forced"] == 2
