"""What the sweeps read and the two off-by-default extensions: the cross-attention's part of the reward, weight decay
on the cross-attention only, the BT replay term on RM-train pairs with the SFT policy's feedback."""

from __future__ import annotations

import pytest
import torch
from transformers import GPTNeoXForCausalLM, GPTNeoXModel

from r2m.config import Config, ConfigError
from r2m.models.r2m_head import R2MHeadConfig, R2MRewardHead
from r2m.models.reward_model import RewardModel
from r2m.models.tokenizer import train_bpe_tokenizer
from r2m.rl.r2m import R2MUpdater, ReplayPairs, head_optimizer
from tests.unit.test_r2m_rl import TEXTS, make, neox_config, rollout, save_checkpoint, snapshot


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    tok = train_bpe_tokenizer(TEXTS, vocab_size=300)
    policy, reference = (GPTNeoXForCausalLM(neox_config(tok, 24)) for _ in range(2))
    return tok, policy, reference, RewardModel(GPTNeoXModel(neox_config(tok, 16)), tok)


PAIRS = [
    {"prompt": "POST: a TL;DR:", "chosen": " jake owes $300", "rejected": " rent"},
    {"prompt": "POST: b my cat Milo TL;DR:", "chosen": " my cat needs a vet", "rejected": " help"},
    {"prompt": "POST: a TL;DR:", "chosen": " roommate owes rent", "rejected": " cat"},
]


def test_attention_part_plus_the_rm_part_is_the_reward():
    torch.manual_seed(0)
    head = R2MRewardHead(R2MHeadConfig(rm_dim=8, policy_dim=6, attn_dim=8, out_init_gain=1.0))
    rte, h, mask = torch.randn(5, 8), torch.randn(5, 7, 6), torch.ones(5, 7, dtype=torch.long)
    w = 0.7
    part, norm = head.attention_part(rte, h, mask, w)
    rm_part = w * (rte @ head.head.weight[0]) + head.head.bias[0]
    assert part.shape == norm.shape == (5,)
    torch.testing.assert_close(part + rm_part, head(rte, h, mask, w))
    torch.testing.assert_close(norm, ((1 - w) * head.attn(rte, h, mask)).norm(dim=-1))
    with pytest.raises(ValueError, match="no cross-attention"):
        R2MRewardHead(R2MHeadConfig(rm_dim=8, policy_dim=6, attn_dim=8, use_attention=False)).attention_part(
            rte, h, mask, w
        )


def test_weight_decay_reaches_the_cross_attention_only():
    torch.manual_seed(0)
    head = R2MRewardHead(R2MHeadConfig(rm_dim=8, policy_dim=6, attn_dim=8))
    cfg = Config()
    cfg.r2m.rm_lr, cfg.r2m.attn_weight_decay = 0.1, 0.5
    opt = head_optimizer(head, cfg)
    before = {k: v.detach().clone() for k, v in head.state_dict().items()}
    for p in head.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: only the decay moves weights, by the factor 1 - lr * wd
    for k, v in head.state_dict().items():
        want = before[k] * (1 - 0.1 * 0.5) if k.startswith("attn.") else before[k]
        torch.testing.assert_close(v, want)


def test_default_optimizer_has_no_weight_decay():
    head = R2MRewardHead(R2MHeadConfig(rm_dim=8, policy_dim=6, attn_dim=8))
    assert [g["weight_decay"] for g in head_optimizer(head, Config()).param_groups] == [0.0, 0.0]


def replay_updater(parts, weight: float):
    tok, _, reference, rm = parts
    fn, scorer, upd = make(parts, "r2m", replay_weight=weight)
    cfg = Config()
    cfg.rl.num_generations, cfg.rl.steps, cfg.r2m.rm_lr, cfg.r2m.replay_weight = 4, 10, 1e-2, weight
    replay = ReplayPairs(PAIRS, rm, upd.monitor, lambda ps: list(ps), n=2, cfg=cfg)
    return fn, scorer, R2MUpdater(scorer, upd.monitor, fn, cfg, replay=replay)


def test_replay_term_is_logged_and_changes_the_update(parts):
    tok = parts[0]
    results = {}
    for weight in (0.0, 5.0):
        fn, scorer, upd = replay_updater(parts, weight)
        rollout(fn, tok)
        metrics = upd.update()
        results[weight] = (metrics, snapshot(scorer.head))
    assert results[5.0][0]["r2m_replay_bt"] > 0
    without, with_replay = results[0.0][1], results[5.0][1]
    # same batch, same initial head: only the replay term differs
    assert any(not torch.equal(without[k], with_replay[k]) for k in without)


def test_replay_draws_are_seeded_and_checkpointed(parts, tmp_path):
    tok = parts[0]
    fn, scorer, upd = replay_updater(parts, 1.0)
    rollout(fn, tok)
    save_checkpoint(upd, tmp_path, 4)
    after_save = torch.randperm(3, generator=upd.replay.generator)
    fn2, scorer2, upd2 = replay_updater(parts, 1.0)
    upd2.resume(tmp_path / "checkpoint-4")
    assert torch.equal(torch.randperm(3, generator=upd2.replay.generator), after_save)


def test_replay_features_use_the_reference_policy(parts):
    _, _, upd = replay_updater(parts, 1.0)
    feats = upd.replay.features()
    rte, h, mask = feats["chosen"]
    assert rte.shape[0] == h.shape[0] == mask.shape[0] == 2
    assert h.shape[-1] == upd.monitor.reference.config.hidden_size and not h.requires_grad


@pytest.mark.parametrize("key,value", [("attn_weight_decay", -0.1), ("replay_weight", -1.0), ("replay_pairs", 0)])
def test_extension_parameters_are_validated(key, value):
    cfg = Config()
    setattr(cfg.r2m, key, value)
    with pytest.raises(ConfigError, match=key):
        cfg.validate()


def test_round_accuracy_reports_the_attention_part_alone(parts):
    from r2m.evaluation.accuracy import pair_accuracy
    from r2m.prompts import render_prompts
    from r2m.rl.assembly import round_accuracy
    from r2m.rl.r2m import feedback_scorer

    tok, _, _, rm = parts
    fn, scorer, upd = make(parts, "r2m", out_init_gain=1.0)
    cfg = Config()
    acc = round_accuracy(rm, scorer.head, upd.monitor, cfg, PAIRS, tok)
    render = lambda ps: render_prompts(tok, ps, cfg.policy)  # noqa: E731
    alone = pair_accuracy(feedback_scorer(rm, scorer.head, upd.monitor, render), PAIRS)
    assert acc["accuracy"] == alone["accuracy"] and acc["mean_margin"] == pytest.approx(alone["mean_margin"])
    assert acc["attention_only"]["n"] == len(PAIRS) and acc["attention_norm"] > 0
    _, iter_scorer, iter_upd = make(parts, "iter_head")
    assert "attention_only" not in round_accuracy(rm, iter_scorer.head, iter_upd.monitor, cfg, PAIRS, tok)


def test_omega_floor_one_is_the_phi_only_update_not_vanilla(parts):
    # at Omega = 1 the feedback never enters (omega(t) = 1): R2M's rewards and updates are iter_head's exactly; phi
    # still learns from the self-labels, so neither equals the frozen vanilla RM after the first update
    tok = parts[0]
    out = {}
    for method, kw in (("r2m", {"omega_floor": 1.0}), ("iter_head", {})):
        fn, scorer, upd = make(parts, method, **kw)
        rewards = rollout(fn, tok, step=4)
        upd.update()
        out[method] = (rewards, {k: v.clone() for k, v in scorer.head.head.state_dict().items()})
    assert out["r2m"][0] == out["iter_head"][0]
    for k, v in out["r2m"][1].items():
        assert torch.equal(v, out["iter_head"][1][k]), k
    assert not torch.equal(out["r2m"][1]["weight"], parts[3].head.weight.detach())
