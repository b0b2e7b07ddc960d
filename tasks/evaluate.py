"""Stage ``evaluate@<algo>-<method>``: judge the final policy and measure the reward model against it.

- win rate of the final policy vs the reference summaries and vs the SFT policy, gold judge, both orders, bootstrap
  95% CI and length-controlled win rate;
- reward-model accuracy on the static RM-test pairs and on pairs sampled from the final policy labelled by the gold
  judge (strict: ties are wrong), with calibration;
- gold score / length / repetition of the final policy's generations.
Writes ``metrics/eval/<run>.json`` and ``metrics/eval/<run>_generations.jsonl``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from r2m.config import Config
from r2m.data.io import PAIR_SCHEMA, read_jsonl, write_json, write_jsonl
from r2m.evaluation.accuracy import pair_accuracy
from r2m.evaluation.text_stats import batch_stats
from r2m.evaluation.winrate import position_calibrated, win_rate_report
from r2m.generation import generate
from r2m.judges.base import Judge, PairwiseItem
from r2m.models.builders import load_causal_lm
from r2m.models.r2m_head import R2MRewardHead
from r2m.models.reward_model import RewardModel
from r2m.prompts import render_prompts
from r2m.rl.policy_pass import PolicyMonitor
from r2m.rl.r2m import feedback_scorer
from tasks.common import Paths, gold_judge, load_gold, run_stage, set_threads, stage_main
from tasks.sft import SFT_GENERATIONS


def win_rates(judge: Judge, rows: list[dict], ours: list[str], theirs: list[str], tag: str) -> dict:
    """Win-rate report of ``ours`` (A) against ``theirs`` (B) on the same prompts."""
    items = [
        PairwiseItem(f"{r['id']}:{tag}", r["prompt"], a, b, {"post_id": r["post_id"]})
        for r, a, b in zip(rows, ours, theirs, strict=True)
    ]
    verdicts = judge.judge(items, both_orders=True)
    return win_rate_report(
        verdicts, lengths_a=[len(a.split()) for a in ours], lengths_b=[len(b.split()) for b in theirs]
    )


def eval_generations(model, tok, rows: list[dict], cfg: Config) -> list[str]:
    """The policy's completions of the eval prompts ``rows`` (``evaluate.*`` decoding), the ones every win rate uses."""
    return generate(
        model,
        tok,
        render_prompts(tok, [r["prompt"] for r in rows], cfg.policy),
        cfg.evaluate.max_new_tokens,
        greedy=cfg.evaluate.greedy,
        temperature=cfg.rl.temperature,
        seed=cfg.seed,
    )


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
        PairwiseItem(f"{r['id']}:policy-pair", r["prompt"], x, y, {"post_id": r["post_id"]})
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
    monitor.attach(policy)
    return feedback_scorer(rm, head, monitor, lambda ps: render_prompts(tok, ps, cfg.policy), max_length=ml)


def evaluate(cfg: Config, workdir: str | Path = ".", algo: str = "grpo", method: str = "vanilla") -> dict:
    set_threads(cfg)
    paths = Paths.of(cfg, workdir)
    run = f"{algo}-{method}"
    policy_dir = paths.rl_run(run) / "final" / "policy"
    if not policy_dir.exists():
        raise FileNotFoundError(f"{policy_dir}: no final policy; run the rl stage for {run} first")
    model, tok = load_causal_lm(policy_dir)
    rows = read_jsonl(paths.data / "eval_prompts.jsonl")
    gens = eval_generations(model, tok, rows, cfg)
    sft_gens = {g["id"]: g["completion"] for g in read_jsonl(paths.sft / SFT_GENERATIONS)}
    metrics: dict = {"run": run, **{f"policy_{k}": v for k, v in batch_stats(gens).items()}}
    posts, gold_fn = load_gold(paths)
    score = run_reward(cfg, paths, paths.rl_run(run) / "final", model, tok)
    test = read_jsonl(paths.data / "rm_test.jsonl", PAIR_SCHEMA)
    metrics["rm_test"] = pair_accuracy(score, test)
    proxy = score([r["prompt"] for r in rows], gens)
    metrics["policy_proxy_mean"] = sum(proxy) / len(proxy)
    if gold_fn is not None:
        judge = gold_judge(posts, gold_fn)
        refs = [" " + r["reference"] for r in rows]
        metrics["vs_reference"] = win_rates(judge, rows, gens, refs, "ref")
        metrics["vs_sft"] = win_rates(judge, rows, gens, [sft_gens[r["id"]] for r in rows], "sft")
        gold = gold_fn([r["post_id"] for r in rows], gens)
        metrics["policy_gold_mean"] = sum(gold) / len(gold)
        pairs = policy_pairs(model, tok, rows, judge, cfg)
        if pairs:
            metrics["rm_policy_pairs"] = pair_accuracy(score, pairs)
    out = paths.metrics / "eval"
    write_jsonl(
        out / f"{run}_generations.jsonl",
        ({"id": r["id"], "post_id": r["post_id"], "completion": g} for r, g in zip(rows, gens, strict=True)),
    )
    write_json(out / f"{run}.json", metrics)
    return {"metrics": metrics}


def run(
    cfg: Config,
    workdir: str | Path = ".",
    pipeline_id: str | None = None,
    mlflow: bool = True,
    algo: str = "grpo",
    method: str = "vanilla",
) -> dict:
    return run_stage("evaluate", evaluate, cfg, workdir, pipeline_id, mlflow, algo=algo, method=method)


if __name__ == "__main__":
    stage_main("evaluate", evaluate, __doc__, run_args=("algo", "method"))
