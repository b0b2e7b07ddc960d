"""R2M in the RL loop on tiny random models: what an update touches, that it lowers GREBT, the variant switches."""

from __future__ import annotations

import pytest
import torch
from transformers import GPTNeoXForCausalLM, GPTNeoXModel

from r2m.config import Config
from r2m.losses import grebt_terms
from r2m.models.r2m_head import R2MRewardHead
from r2m.models.reward_model import RewardModel
from r2m.models.tokenizer import train_bpe_tokenizer
from r2m.rl.policy_pass import PolicyMonitor
from r2m.rl.r2m import VARIANTS, R2MScorer, R2MUpdater, build_head, score_with_feedback
from r2m.rl.reward import RewardFunction
from tests.helpers.tiny_models import neox_config

TEXTS = ["my roommate Jake owes me $300 for rent", "my cat Milo needs a $2,500 vet visit", "TL;DR: help"] * 8


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    tok = train_bpe_tokenizer(TEXTS, vocab_size=300)
    policy = GPTNeoXForCausalLM(neox_config(tok, 24))
    reference = GPTNeoXForCausalLM(neox_config(tok, 24))
    rm = RewardModel(GPTNeoXModel(neox_config(tok, 16)), tok)
    return tok, policy, reference, rm


def make(parts, method: str, **r2m):
    tok, policy, reference, rm = parts
    cfg = Config()
    cfg.rl.num_generations, cfg.rl.steps = 4, 10
    cfg.r2m.rm_lr = 1e-2
    for k, v in r2m.items():
        setattr(cfg.r2m, k, v)
    variant = VARIANTS[method]
    monitor = PolicyMonitor(tok, reference, keep_feedback=variant.use_attention, k=4)
    policy.__dict__.pop("generate", None)  # the module-scoped policy: drop an earlier test's capture
    monitor.attach(policy)
    head = build_head(rm, policy.config.hidden_size, cfg, variant, "rm", "sft")
    scorer = R2MScorer(rm, head, variant, max_length=64)
    fn = RewardFunction(scorer, monitor, num_generations=4)
    return fn, scorer, R2MUpdater(scorer, monitor, fn, cfg)


PROMPTS = ["POST: a TL;DR:"] * 4 + ["POST: b my cat Milo TL;DR:"] * 4


def generate(policy, tok, prompts, max_new_tokens: int = 6, seed: int = 0) -> list[list[int]]:
    """Sample completions the way TRL does (prompts tokenised with the defaults, left-padded, generate), so that the
    monitor's capture sees a real rollout; returns the completion ids cut after the first EOS."""
    enc = tok(list(prompts))["input_ids"]
    width = max(map(len, enc))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in enc])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
    torch.manual_seed(seed)
    with torch.no_grad():
        out = policy.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            pad_token_id=tok.pad_token_id,
        )
    comps = []
    for c in out[:, width:].tolist():
        comps.append(c[: c.index(tok.eos_token_id) + 1] if tok.eos_token_id in c else c)
    return comps


def rollout(fn, tok, step: int = 3):
    ids = generate(fn.monitor.policy, tok, PROMPTS)
    comps = tok.batch_decode(ids, skip_special_tokens=True)

    class S:
        global_step = step

    return fn(PROMPTS, comps, completion_ids=ids, trainer_state=S())


def save_checkpoint(updater, output_dir, step: int) -> None:
    """What TRL's save does for the callback: ``on_save`` into ``<output_dir>/checkpoint-<step>``."""

    class Args:
        pass

    class State:
        global_step = step

    Args.output_dir = str(output_dir)
    updater.on_save(Args(), State(), None)


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def test_update_touches_only_attention_and_head_and_lowers_grebt(parts):
    tok, policy, _, rm = parts
    fn, scorer, upd = make(parts, "r2m")
    rollout(fn, tok)
    trunk0, policy0, head0 = snapshot(rm.trunk), snapshot(policy), snapshot(scorer.head)
    batch, cache = fn.last_batch, scorer.cache
    ppass = upd.monitor.forward(batch["prompt_ids"], batch["completion_ids"])
    w = scorer.omega_at(cache["step"])

    def loss() -> float:
        with torch.no_grad():
            rewards = scorer.head(cache["rte"], ppass.feedback, ppass.mask, w).view(-1, 4)
            return float(grebt_terms(rewards, 0.3, std_floor=0.1)["grebt"])

    before = loss()
    metrics = upd.update()
    assert loss() < before
    assert changed(trunk0, rm.trunk) == set() and changed(policy0, policy) == set()
    assert {k.split(".")[0] for k in changed(head0, scorer.head)} == {"attn", "head"}
    assert {"r2m_omega", "r2m_bt", "r2m_gre", "r2m_grebt", "r2m_update_s"} <= set(metrics)
    assert metrics["r2m_omega"] == pytest.approx(0.5 * torch.cos(torch.tensor(torch.pi * 3 / 10)).item() + 0.5)


def test_first_step_reward_is_vanilla(parts):
    # omega(0) = 1: before any RL step R2M's reward equals the vanilla RM's
    tok, _, _, rm = parts
    fn, scorer, _ = make(parts, "r2m")
    got = torch.tensor(rollout(fn, tok, step=0))
    want = rm.score_texts([p + c for p, c in zip(fn.last_batch["prompts"], fn.last_batch["completions"], strict=True)])
    assert torch.allclose(got, want, atol=1e-5)


def test_frozen_variant_never_updates(parts):
    tok = parts[0]
    fn, scorer, upd = make(parts, "r2m_frozen")
    rollout(fn, tok)
    head0 = snapshot(scorer.head)
    assert set(upd.update()) == {"r2m_omega"}
    assert changed(head0, scorer.head) == set()


def test_iter_head_has_no_attention_and_updates_phi_only(parts):
    tok = parts[0]
    fn, scorer, upd = make(parts, "iter_head")
    assert scorer.head.attn is None and fn.monitor.keep_feedback is False
    rollout(fn, tok)
    head0 = snapshot(scorer.head)
    upd.update()
    assert {k.split(".")[0] for k in changed(head0, scorer.head)} == {"head"}


def test_noise_variant_replaces_feedback(parts):
    tok = parts[0]
    fn, scorer, _ = make(parts, "r2m_noise")
    rollout(fn, tok)
    ppass = fn.monitor.forward(fn.last_batch["prompt_ids"], fn.last_batch["completion_ids"])
    h, mask = scorer.feedback(ppass)
    assert h.shape == ppass.feedback.shape and not torch.allclose(h, ppass.feedback)


@pytest.mark.parametrize(("method", "alpha"), [("r2m", 0.3), ("r2m_no_gre", 0.0), ("r2m_no_bt", 1.0)])
def test_alpha_switches(parts, method, alpha):
    _, _, upd = make(parts, method, alpha=0.3)
    assert upd.alpha == alpha


def test_head_save_load_roundtrip(parts, tmp_path):
    tok, policy, _, rm = parts
    fn, scorer, upd = make(parts, "r2m")
    rollout(fn, tok)
    upd.update()
    scorer.head.save(tmp_path / "h")
    loaded = R2MRewardHead.load(tmp_path / "h")
    args = (["POST: a TL;DR:"], ["POST: a TL;DR:"], [" jake owes $300"])
    a = score_with_feedback(rm, scorer.head, fn.monitor, *args)
    b = score_with_feedback(rm, loaded, fn.monitor, *args)
    assert a == pytest.approx(b, abs=1e-6)
    with pytest.raises(FileNotFoundError, match="not a saved R2M reward head"):
        R2MRewardHead.load(tmp_path / "nothing")


def test_share_trunk_with_only_identical_trunks(parts):
    tok, _, _, rm = parts
    twin = RewardModel(GPTNeoXModel(neox_config(tok, 16)), tok)
    twin.trunk.load_state_dict(rm.trunk.state_dict())
    other = RewardModel(GPTNeoXModel(neox_config(tok, 16)), tok)
    with torch.no_grad():
        other.trunk.load_state_dict(rm.trunk.state_dict())
        next(other.trunk.parameters()).add_(1e-3)
    assert not other.share_trunk_with(rm) and other.trunk is not rm.trunk
    assert twin.share_trunk_with(rm) and twin.trunk is rm.trunk
    texts = ["a b c", "d e"]
    assert torch.equal(twin.embed_texts(texts), rm.embed_texts(texts))


def test_vanilla_scorer_keeps_the_batch_embeddings(parts):
    from r2m.rl.reward import VanillaScorer

    rm = parts[3]
    scorer = VanillaScorer(rm)
    texts = ["a b c", "d e"]
    rewards = scorer(texts, None, step=5)
    assert torch.equal(rewards, rm.score_texts(texts))
    assert scorer.cache["step"] == 5 and torch.equal(scorer.cache["rte"], rm.embed_texts(texts))


def test_embedding_cache_reuses_frozen_trunk_outputs(parts):
    _, _, _, rm = parts
    texts = ["a b", "c d", "a b"]
    plain = rm.embed_texts(texts)
    rm.embedding_cache = {}
    try:
        first = rm.embed_texts(texts)
        assert set(rm.embedding_cache) == {"a b", "c d"} and torch.allclose(first, plain, atol=1e-6)
        rm.embedding_cache["a b"] = torch.zeros_like(first[0])  # a cached text is not recomputed
        assert torch.equal(rm.embed_texts(["a b"])[0], torch.zeros_like(first[0]))
    finally:
        rm.embedding_cache = None


def count_backbone_calls(model) -> list[int]:
    calls = [0]
    model.base_model.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize(("update_feedback", "forwards"), [("scoring", 0), ("updated", 1)])
def test_update_feedback_reuses_the_scoring_states_or_runs_one_backbone_forward(parts, update_feedback, forwards):
    tok, policy, _, _ = parts
    fn, scorer, upd = make(parts, "r2m", update_feedback=update_feedback)
    rollout(fn, tok)
    calls = count_backbone_calls(policy)
    metrics = upd.update()
    assert calls[0] == forwards and metrics["r2m_grebt"] > 0
    policy.base_model._forward_hooks.clear()


def test_scoring_during_rl_runs_no_policy_forward(parts):
    tok, policy, _, _ = parts
    fn, scorer, _ = make(parts, "r2m")
    ids = generate(policy, tok, PROMPTS)  # TRL's rollout (captured)
    calls = count_backbone_calls(policy)
    rewards = fn(PROMPTS, tok.batch_decode(ids, skip_special_tokens=True), completion_ids=ids)
    policy.base_model._forward_hooks.clear()
    assert calls[0] == 0 and len(rewards) == 8 and scorer.cache["h"] is not None


def test_noise_head_is_scored_on_noise_at_evaluation(parts):
    tok, policy, _, rm = parts
    fn, scorer, upd = make(parts, "r2m_noise")
    assert scorer.head.config.noise
    rollout(fn, tok)
    upd.update()
    args = (["POST: a TL;DR:"] * 2, ["POST: a TL;DR:"] * 2, [" jake owes $300", " rent"])
    noisy = score_with_feedback(rm, scorer.head, fn.monitor, *args, seed=3)
    assert noisy == score_with_feedback(rm, scorer.head, fn.monitor, *args, seed=3)  # seeded
    scorer.head.config.noise = False
    try:
        real = score_with_feedback(rm, scorer.head, fn.monitor, *args, seed=3)
    finally:
        scorer.head.config.noise = True
    assert noisy != pytest.approx(real, abs=1e-6)


def test_noise_generator_state_is_checkpointed(parts, tmp_path):
    tok = parts[0]
    fn, scorer, upd = make(parts, "r2m_noise")
    rollout(fn, tok)
    save_checkpoint(upd, tmp_path, 5)
    after_save = torch.randn(4, generator=scorer.generator)
    fn2, scorer2, upd2 = make(parts, "r2m_noise")
    upd2.resume(tmp_path / "checkpoint-5")
    assert torch.equal(torch.randn(4, generator=scorer2.generator), after_save)


def test_out_init_gain_and_horizon_come_from_the_config(parts):
    _, small, _ = make(parts, "r2m", out_init_gain=0.1, horizon=0)
    _, large, _ = make(parts, "r2m", out_init_gain=1.0, horizon=40)
    ws, wl = (s.head.attn.to_out.weight.detach() for s in (small, large))
    assert float(wl.norm()) == pytest.approx(10 * float(ws.norm()), rel=1e-5)  # same seed, 10x the gain
    assert small.head.config.total_steps == 10 and large.head.config.total_steps == 40


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rollout_scoring_and_update_on_cuda(parts):
    tok, policy, reference, rm = parts
    for m in (policy, reference, rm):
        m.to("cuda")
    try:
        fn, scorer, upd = make(parts, "r2m")
        scorer.head.to("cuda")
        upd.optimizer = torch.optim.AdamW(scorer.head.trainable_parameters(), lr=1e-2)
        rewards = rollout(fn, tok)
        assert len(rewards) == 8 and scorer.cache["h"].device.type == "cuda"
        assert upd.update()["r2m_grebt"] > 0
    finally:
        for m in (policy, reference, rm):
            m.to("cpu")


def test_once_variant_updates_after_the_first_batch_only(parts):
    tok = parts[0]
    fn, scorer, upd = make(parts, "r2m_once")
    rollout(fn, tok, step=0)
    head0 = snapshot(scorer.head)
    assert "r2m_grebt" in upd.update() and changed(head0, scorer.head)
    rollout(fn, tok, step=1)
    head1 = snapshot(scorer.head)
    assert set(upd.update()) == {"r2m_omega"} and changed(head1, scorer.head) == set()


def test_update_logs_the_attention_share_of_the_fused_embedding(parts):
    tok = parts[0]
    fn, scorer, upd = make(parts, "r2m")
    rollout(fn, tok, step=5)
    share = upd.update()["r2m_attention_share"]
    assert 0.0 < share < 1.0  # W_o starts small (gain 0.1): the RM's own embedding dominates
