"""The hidden-state analysis: the maths on hand-made tensors, response-only pooling, prompt sharing, and a tiny causal
LM with planted chosen / rejected directions."""

from __future__ import annotations

import math
import random

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from r2m.evaluation import hidden_states as hs
from r2m.evaluation.hidden_states import (
    label_gap_permutation_test,
    label_similarity,
    pearson,
    pooled_hidden_states,
    pooled_response_states,
    rankdata,
    resolve_layers,
    similarity_reward_correlation,
    spearman,
    swapped_gaps,
    tokenize_prompt_responses,
)

POOL = 40  # tokens per kind: p0..p39 (prompts), c0..c39 (chosen), r0..r39 (rejected)


# ------------------------------------------------------------------------------------------------- maths
def test_resolve_layers_default_negative_and_range():
    assert resolve_layers([], 2) == [0, 1, 2]
    assert resolve_layers([], 30) == [0, 10, 20, 30]
    assert resolve_layers([-1, 0, 2, 1], 2) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"layer 3 is out of range: the model has 3 hidden states"):
        resolve_layers([3], 2)
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers([-4], 2)


def test_identical_vectors_have_cosine_one():
    x = torch.randn(2, 1, 5).expand(2, 4, 5)
    s = label_similarity(x, x.clone())
    for key in ("within_chosen", "within_rejected", "within", "across", "pair_cosine"):
        torch.testing.assert_close(s[key], torch.ones(2, dtype=torch.float64), msg=key)
    torch.testing.assert_close(s["gap"], torch.zeros(2, dtype=torch.float64))


def test_label_similarity_hand_computed():
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    chosen = torch.stack([e0, (e0 + e1) * 3]).unsqueeze(0)  # [1, 2, 2]: cos(c0, c1) = 1/sqrt(2); scale is ignored
    rejected = torch.stack([e1, 2 * e1]).unsqueeze(0)  # cos(r0, r1) = 1
    s = {k: float(v) for k, v in label_similarity(chosen, rejected).items()}
    h = 1 / math.sqrt(2)
    assert s["within_chosen"] == pytest.approx(h)
    assert s["within_rejected"] == pytest.approx(1.0)
    assert s["within"] == pytest.approx((h + 1) / 2)
    assert s["across"] == pytest.approx(
        (0.0 + h) / 2
    )  # cos(c0, r1) = 0, cos(c1, r0) = 1/sqrt(2); pairs i == j left out
    assert s["gap"] == pytest.approx((h + 1) / 2 - h / 2)
    assert s["pair_cosine"] == pytest.approx((0.0 + h) / 2)  # cos(c0, r0) = 0, cos(c1, r1) = 1/sqrt(2)


def test_orthogonal_label_clusters():
    g = torch.Generator().manual_seed(0)
    u, v = torch.zeros(32), torch.zeros(32)
    u[0], v[1] = 1.0, 1.0
    chosen = u + 0.01 * torch.randn(3, 16, 32, generator=g)
    rejected = v + 0.01 * torch.randn(3, 16, 32, generator=g)
    s = label_similarity(chosen, rejected)
    assert torch.all(s["within"] > 0.98) and torch.all(s["across"].abs() < 0.02) and torch.all(s["gap"] > 0.97)


def test_swapped_gaps_match_label_similarity_on_swapped_pairs():
    g = torch.Generator().manual_seed(1)
    chosen, rejected = torch.randn(2, 9, 6, generator=g) + 1.0, torch.randn(2, 9, 6, generator=g)
    keep = torch.ones(2, 9)
    keep[1, [0, 4, 5]] = -1
    c2, r2 = chosen.clone(), rejected.clone()
    c2[:, [0, 4, 5]], r2[:, [0, 4, 5]] = rejected[:, [0, 4, 5]], chosen[:, [0, 4, 5]]
    gaps = swapped_gaps(chosen, rejected, keep)  # [L, P]
    torch.testing.assert_close(gaps[:, 0], label_similarity(chosen, rejected)["gap"])
    torch.testing.assert_close(gaps[:, 1], label_similarity(c2, r2)["gap"])


def test_permutation_test_separates_structure_from_noise():
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(1, 24, 16, generator=g), torch.randn(1, 24, 16, generator=g)
    planted = label_gap_permutation_test(noise[0] + 0.5, noise[1] - 0.5, 500, torch.Generator().manual_seed(0))
    assert float(planted["gap_p_value"][0]) == pytest.approx(1 / 501)  # no random swap comes close
    null = label_gap_permutation_test(*noise, 500, torch.Generator().manual_seed(0))
    assert float(null["gap_p_value"][0]) > 0.01
    assert abs(float(null["gap_null_mean"][0])) < 2 * float(null["gap_null_std"][0])


def test_pearson_rankdata_spearman_hand_computed():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert float(pearson(x, 2 * x + 1)) == pytest.approx(1.0)
    assert float(pearson(x, -x)) == pytest.approx(-1.0)
    assert math.isnan(float(pearson(x, torch.ones(4))))
    torch.testing.assert_close(
        rankdata(torch.tensor([10.0, 20.0, 20.0, 5.0])), torch.tensor([2.0, 3.5, 3.5, 1.0]).double()
    )
    assert float(spearman(x, x**3)) == pytest.approx(1.0)  # monotone, not linear
    batched = spearman(torch.stack([x, -x]), torch.stack([x, x]))
    torch.testing.assert_close(batched, torch.tensor([1.0, -1.0]).double())


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(3)
    x, y = torch.randint(0, 6, (50,), generator=g).double(), torch.randn(50, generator=g).double()
    assert float(spearman(x, y)) == pytest.approx(stats.spearmanr(x.numpy(), y.numpy())[0], abs=1e-12)


def test_correlation_sign_on_planted_data():
    """States on a half circle at angle = reward: similarity falls as |reward difference| grows -> both -1."""
    g = torch.Generator().manual_seed(4)
    r_chosen, r_rejected = 1.5 * torch.rand(20, generator=g), 1.5 * torch.rand(20, generator=g)

    def states(angle: torch.Tensor) -> torch.Tensor:  # [N] -> [1, N, 2]
        return torch.stack([angle.cos(), angle.sin()], dim=-1).unsqueeze(0)

    c = similarity_reward_correlation(states(r_chosen), states(r_rejected), r_chosen, r_rejected)
    assert float(c["pair_spearman"]) == pytest.approx(-1.0)
    assert float(c["all_pairs_spearman"]) == pytest.approx(-1.0)
    assert float(c["pair_pearson"]) < -0.9 and float(c["all_pairs_pearson"]) < -0.9
    # states unrelated to the reward: no such correlation
    rand = similarity_reward_correlation(torch.randn(1, 20, 8), torch.randn(1, 20, 8), r_chosen, r_rejected)
    assert abs(float(rand["all_pairs_spearman"])) < 0.3


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match=r"\[L, N, H\]"):
        label_similarity(torch.zeros(2, 3, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        label_similarity(torch.zeros(2, 1, 4), torch.zeros(2, 1, 4))
    with pytest.raises(ValueError, match="rewards must be"):
        similarity_reward_correlation(torch.zeros(1, 3, 4), torch.zeros(1, 3, 4), torch.zeros(2), torch.zeros(3))


# ------------------------------------------------------------------------------------------------- a tiny LM
@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    names = ["<pad>"] + [f"{kind}{i}" for kind in "pcr" for i in range(POOL)]
    vocab = {name: i for i, name in enumerate(names)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>")


def tiny_lm(arch: str, vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    if arch == "neox":
        cfg = GPTNeoXConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=128,
            rotary_pct=0.25,
            pad_token_id=0,
        )
        return GPTNeoXForCausalLM(cfg).eval()
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


def texts(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """n prompts (3-12 prompt tokens) with a chosen (c tokens) and a rejected (r tokens) response of 2-7 tokens."""
    rnd = random.Random(seed)

    def words(kind: str, lo: int, hi: int) -> str:
        return " ".join(f"{kind}{rnd.randrange(POOL)}" for _ in range(rnd.randint(lo, hi)))

    return (
        [words("p", 3, 12) for _ in range(n)],
        [" " + words("c", 2, 7) for _ in range(n)],
        [" " + words("r", 2, 7) for _ in range(n)],
    )


@pytest.mark.parametrize("arch", ["neox", "llama"])
def test_padding_batching_and_prompt_sharing_do_not_change_the_states(tok, arch):
    model = tiny_lm(arch, len(tok))
    prompts, chosen, rejected = texts(7)
    singles = [pooled_hidden_states(model, tok, [p], [c], [], 1) for p, c in zip(prompts, chosen, strict=True)]
    one_by_one = torch.cat(singles, dim=1)
    batched = pooled_hidden_states(model, tok, prompts, chosen, [], batch_size=3)
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-5)
    shared = pooled_response_states(model, tok, prompts, [chosen, rejected], [], batch_size=4, share_prompt=True)
    separate = pooled_response_states(model, tok, prompts, [chosen, rejected], [], batch_size=4, share_prompt=False)
    assert shared.shape == (2, 3, 7, 32)
    torch.testing.assert_close(shared, separate, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared[0], one_by_one, atol=1e-5, rtol=1e-5)


def test_pooling_is_over_response_tokens_only(tok):
    model = tiny_lm("neox", len(tok))
    prompts, chosen, _ = texts(5)
    other_prompts, _, _ = texts(5, seed=9)  # different prompt tokens and lengths
    a = pooled_hidden_states(model, tok, prompts, chosen, [0, 2])
    b = pooled_hidden_states(model, tok, other_prompts, chosen, [0, 2])
    torch.testing.assert_close(a[0], b[0])  # layer 0 (embeddings) sees only the response's own tokens
    assert not torch.allclose(a[1], b[1])  # deeper, the response attends to its prompt
    emb = model.get_input_embeddings().weight
    ids = tok(chosen[0], add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(a[0, 0], emb[ids].mean(0))


def test_packing_check_falls_back_to_separate_forwards(tok, monkeypatch, caplog):
    model = tiny_lm("neox", len(tok))
    prompts, chosen, rejected = texts(4)
    separate = pooled_response_states(model, tok, prompts, [chosen, rejected], share_prompt=False)

    def see_everything(segment, dtype=torch.float32):  # a model that ignored the custom mask would do this
        return torch.zeros(segment.shape[0], 1, segment.shape[1], segment.shape[1], dtype=dtype)

    monkeypatch.setattr(hs, "packed_attention_mask", see_everything)
    with caplog.at_level("WARNING"):
        shared = pooled_response_states(model, tok, prompts, [chosen, rejected], share_prompt=True)
    assert "using separate forwards" in caplog.text
    torch.testing.assert_close(shared, separate)


def test_truncation_keeps_response_start_and_prompt_end(tok):
    p_ids, r_ids = tokenize_prompt_responses(tok, ["p1 p2 p3 p4 p5"], [[" c1 c2"], [" r1 r2 r3"]], max_length=5)
    assert tok.convert_ids_to_tokens(p_ids[0]) == ["p4", "p5"]  # room beside the longest response (3 tokens)
    assert tok.convert_ids_to_tokens(r_ids[1][0]) == ["r1", "r2", "r3"]
    _, r_ids = tokenize_prompt_responses(tok, ["p1"], [[" c1 c2 c3"]], max_length=2)
    assert tok.convert_ids_to_tokens(r_ids[0][0]) == ["c1", "c2"]
    with pytest.raises(ValueError, match="has no tokens"):
        tokenize_prompt_responses(tok, ["p1"], [[""]], max_length=8)


def _plant(model, tok, seed: int = 0) -> None:
    """Chosen tokens along one unit direction, rejected tokens along an orthogonal one (plus a little noise)."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(32, 2, generator=g))
    u, v = basis[:, 0], basis[:, 1]
    u, v = u - u.mean(), v - v.mean()  # zero-mean: LayerNorm's centring keeps them apart
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        for i in range(POOL):
            for kind, d in (("c", u), ("r", v)):
                tid = tok.convert_tokens_to_ids(f"{kind}{i}")
                emb[tid] = d / d.norm() + 0.1 * torch.randn(32, generator=g) / math.sqrt(32)


@pytest.mark.parametrize("arch", ["neox", "llama"])
def test_planted_structure_in_a_tiny_lm(tok, arch):
    prompts, chosen, rejected = texts(24, seed=3)
    planted = tiny_lm(arch, len(tok), seed=1)
    _plant(planted, tok)
    control = tiny_lm(arch, len(tok), seed=1)  # random embeddings, same tokens
    gaps = {}
    for name, model in (("planted", planted), ("control", control)):
        states = pooled_response_states(model, tok, prompts, [chosen, rejected])  # [2, 3, 24, 32]
        gaps[name] = label_similarity(states[0], states[1])["gap"]
    assert gaps["planted"][0] > 0.8  # layer 0: the planted directions themselves (measured 0.99)
    assert gaps["planted"][-1] > 0.5  # still apart after the transformer layers and the final norm (0.97-1.0)
    assert torch.all(gaps["control"] < 0.3 * gaps["planted"])  # random embeddings: 0.09-0.16
