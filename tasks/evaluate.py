"""Stage ``evaluate@<algo>-<method>``: judge the final policy and measure the reward model against it.

- win rate of the final policy vs the reference summaries and vs the SFT policy, gold judge, both orders, bootstrap
  95% CI and length-controlled win rate;
- reward-model accuracy on the static RM-test pairs and on pairs sampled from the final policy labelled by the gold
  judge (strict: ties are wrong), with calibration;
- gold score / length / repetition of the final policy's generations.
Writes ``metrics/eval/<run>.json`` and ``metrics/eval/<run>_generations.jsonl``.
"""

from __future__ import annotations

from pathlib import Path

from r2m.config import Config
from r2m.data.io import PAIR_SCHEMA, read_jsonl, write_json, write_jsonl
from r2m.evaluation.accuracy import pair_accuracy
from r2m.evaluation.compare import compare
from r2m.evaluation.generations import eval_generations
from r2m.evaluation.policy_pairs import policy_pairs, run_reward
from r2m.evaluation.text_stats import batch_stats
from r2m.judges.gold import gold_judge, load_gold
from r2m.models.builders import load_causal_lm
from r2m.paths import SFT_GENERATIONS, Paths


def evaluate(cfg: Config, workdir: str | Path = ".", algo: str = "grpo", method: str = "vanilla") -> dict:
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
        metrics["vs_reference"] = compare(judge, rows, gens, refs, "ref", progress=False)[0]
        metrics["vs_sft"] = compare(judge, rows, gens, [sft_gens[r["id"]] for r in rows], "sft", progress=False)[0]
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
