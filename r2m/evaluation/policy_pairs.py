"""Reward-model accuracy on the policy's own distribution: pairs sampled from a final policy, labelled by a judge,
scored by the run's reward (the R2M head with that policy's feedback, or the run's / the vanilla reward model)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from r2m.config import Config
from r2m.data.rows import gold_key
from r2m.evaluation.accuracy import pair_accuracy
from r2m.evaluation.winrate import position_calibrated
from r2m.generation import generate
from r2m.judges.base import Judge, PairwiseItem
from r2m.models.builders import load_causal_lm
from r2m.models.r2m_head import R2MRewardHead
from r2m.models.reward_model import RewardModel
from r2m.paths import Paths
from r2m.prompts import render_prompts
from r2m.rl.policy_pass import PolicyMonitor
from r2m.rl.r2m import feedback_scorer


def policy_pairs(
    model, tok, rows: list[dict], judge: Judge, cfg: Config, progress: bool = False, calibrate: bool = False
) -> list[dict]:
    """Two sampled completions per prompt (first ``evaluate.n_policy_pairs`` prompts), labelled by ``judge`` in both
    orders; ties and invalid verdicts are dropped (strict: only pairs the judge separates are kept). With
    ``calibrate`` and a judge that reports P(A), P(B), the labels are its position-calibrated verdicts."""
    rows = rows[: cfg.evaluate.n_policy_pairs]
    prompts = render_prompts(tok, [r["prompt"] for r in rows], cfg.policy)
    a, b = (
        generate(
            model,
            tok,
            prompts,
            cfg.evaluate.max_new_tokens,
            greedy=False,
            temperature=cfg.rl.temperature,
            seed=cfg.seed + k,
        )
        for k in (1, 2)
    )
    items = [
        PairwiseItem(f"{r['id']}:policy-pair", r["prompt"], x, y, {"post_id": gold_key(r)})
        for r, x, y in zip(rows, a, b, strict=True)
    ]
    verdicts = judge.judge(items, progress=progress)
    if calibrate:
        verdicts = position_calibrated(verdicts) or verdicts
    out = []
    for r, x, y, v in zip(rows, a, b, verdicts, strict=True):
        if v.preferred in ("A", "B"):
            chosen, rejected = (x, y) if v.preferred == "A" else (y, x)
            out.append({"id": r["id"], "prompt": r["prompt"], "chosen": chosen, "rejected": rejected})
    return out


def run_reward(cfg: Config, paths: Paths, final: Path, policy, tok) -> Callable[[list[str], list[str]], list[float]]:
    """The run's reward model as ``score(plain_prompts, responses)``: the R2M head with the final policy's feedback
    at t = T, the further-trained RM of ``pretrained_rm``, or the vanilla RM."""
    ml = cfg.reward_model.max_length
    if (final / "reward_model").exists():
        rm = RewardModel.load(final / "reward_model")
    else:
        rm = RewardModel.load(paths.rm)
    if not (final / "reward_head").exists():
        return lambda ps, rs: rm.score_texts([p + r for p, r in zip(ps, rs, strict=True)], max_length=ml).tolist()
    head = R2MRewardHead.load(final / "reward_head")
    monitor = PolicyMonitor(tok, policy, keep_feedback=True)
    monitor.attach(policy, capture=False)
    render = lambda ps: render_prompts(tok, ps, cfg.policy)  # noqa: E731
    return feedback_scorer(rm, head, monitor, render, max_length=ml, seed=cfg.seed)


def judged_policy_pairs(cfg: Config, paths: Paths, run: str, judge: Judge, rows: list[dict]) -> dict | None:
    """RM accuracy of ``run``'s reward (R2M at t = T for R2M runs) on pairs sampled from its final policy and
    labelled by ``judge`` (strict; pairs the judge ties or cannot parse are dropped). An LLM judge that reports
    P(A), P(B) labels by its position-calibrated verdicts."""
    model, tok = load_causal_lm(paths.rl_run(run) / "final" / "policy")
    pairs = policy_pairs(model, tok, rows, judge, cfg, progress=True, calibrate=judge.name != "gold")
    if not pairs:
        return None
    score = run_reward(cfg, paths, paths.rl_run(run) / "final", model, tok)
    return {**pair_accuracy(score, pairs), "n_sampled": min(len(rows), cfg.evaluate.n_policy_pairs)}
