"""The policy feedback captured from generation equals a forward over the same tokens; the monitor's KL and its
tokenisation match what an RL rollout has; the capture refuses what it cannot match."""

from __future__ import annotations

import pytest
import torch

from r2m.rl.policy_pass import PolicyMonitor, monitored_step, response_logps, sequence_states
from tests.unit.test_r2m_rl import PROMPTS, generate


def test_captured_states_equal_a_forward_over_prompt_and_response(lm):
    tok, policy, reference = lm
    monitor = PolicyMonitor(tok, reference, keep_feedback=True, monitor_sample=0, k=4)
    monitor.attach(policy)
    ids = generate(policy, tok, PROMPTS, max_new_tokens=8)
    ppass = monitor.rollout(ids)
    assert ppass.prompt_ids == [tok(p)["input_ids"] for p in PROMPTS]  # TRL's tokenisation, not a re-tokenisation
    states, mask = sequence_states(policy, ppass.prompt_ids, ids, tok.pad_token_id)
    assert torch.equal(ppass.mask.cpu(), mask.cpu())
    lens = [len(p) + len(c) - 1 for p, c in zip(ppass.prompt_ids, ids, strict=True)]
    assert mask.sum(1).tolist() == lens  # x + y[:-1]
    real = mask.bool()[..., None]
    assert torch.allclose(ppass.feedback * real, states * real, atol=1e-5)
    # the captured states give the policy's own log-probs of the sampled tokens (= a full forward's)
    full = [
        policy(input_ids=torch.tensor([p + c])).logits[0].log_softmax(-1)
        for p, c in zip(ppass.prompt_ids, ids, strict=True)
    ]
    want = torch.stack(
        [
            lp[torch.arange(len(p) - 1, len(p) - 1 + len(c)), torch.tensor(c)].sum()
            for lp, p, c in zip(full, ppass.prompt_ids, ids, strict=True)
        ]
    )
    got = response_logps(policy, ppass.feedback, [len(p) for p in ppass.prompt_ids], ids)
    assert torch.allclose(got, want.detach(), atol=1e-4)
    with pytest.raises(RuntimeError, match="no rollout hidden states captured"):
        monitor.rollout(ids)  # consumed: a second scoring of the same batch cannot read stale states


def test_kl_is_zero_against_itself_and_measured_on_the_sample_only(lm):
    tok, policy, reference = lm
    same = PolicyMonitor(tok, policy, monitor_sample=0, k=4)
    same.attach(policy)
    ids = generate(policy, tok, PROMPTS)
    assert same.rollout(ids).kl.abs().max() < 1e-4
    other = PolicyMonitor(tok, reference, monitor_sample=2, k=4)
    other.attach(policy)
    ids = generate(policy, tok, PROMPTS, seed=1)
    ppass = other.rollout(ids)
    assert ppass.rows == [0, 4] and ppass.feedback is None
    assert torch.isnan(ppass.kl[[1, 2, 3, 5, 6, 7]]).all() and torch.isfinite(ppass.kl[[0, 4]]).all()
    full = other.forward(ppass.prompt_ids, ids, with_reference=True).kl  # one forward of the policy instead
    assert torch.allclose(full[[0, 4]], ppass.kl[[0, 4]], atol=1e-4)


def test_monitor_every_measures_steps_0_k_2k_and_the_last_only(lm):
    tok, policy, reference = lm
    assert [s for s in range(10) if monitored_step(s, 4, last=9)] == [0, 4, 8, 9]
    assert all(monitored_step(s, 1) for s in range(5))
    monitor = PolicyMonitor(tok, reference, monitor_sample=2, k=4, monitor_every=4, last_step=9)
    monitor.attach(policy)
    for step, measured in ((0, True), (3, False), (8, True), (9, True)):
        ppass = monitor.rollout(generate(policy, tok, PROMPTS, seed=step), step)
        assert ppass.rows == ([0, 4] if measured else [])
        assert bool(torch.isfinite(ppass.kl).any()) == measured


def test_encode_matches_a_rollout_and_the_capture_rejects_a_foreign_batch(lm):
    tok, policy, reference = lm
    monitor = PolicyMonitor(tok, reference, keep_feedback=True, k=4)
    monitor.attach(policy)
    p, r = monitor.encode(["POST: a TL;DR:"], [" rent"])
    assert p == [tok("POST: a TL;DR:")["input_ids"]]
    assert r == [tok(" rent", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]  # RL completions end in EOS
    ids = generate(policy, tok, PROMPTS)
    with pytest.raises(RuntimeError, match="8 prompts generated, 7 completions scored"):
        monitor.rollout(ids[:7])
    unattached = PolicyMonitor(tok, reference)
    with pytest.raises(RuntimeError, match="attach"):
        unattached.rollout(ids)
    evaluation = PolicyMonitor(tok, reference)
    evaluation.attach(policy, capture=False)  # evaluation: forward() only, generate() left alone
    assert evaluation.capture is None
