"""Stage ``evaluate@<algo>-<method>``: judge a run's checkpoints and measure the reward model against the final policy.

- every round's policy (greedy eval generations) scored by the proxy (the frozen vanilla RM), the held-out RM and
  gold; four checkpoint choices (:mod:`r2m.evaluation.checkpoints`): final, best by proxy, best by held-out RM,
  gold-oracle best; for each, the win rate vs the reference summaries and vs the SFT policy (both orders,
  bootstrap 95% CI, length-controlled win rate);
- reward-model accuracy on the static RM-test pairs (an R2M run's is the one its RL stage exported with the final
  head: same reward, same pairs) and on pairs sampled from the final policy labelled by the judge (an LLM judge that
  reports P(A), P(B): by its position-calibrated verdicts, as ``r2m evaluate``; strict: ties are wrong), with
  calibration;
- gold score / length / repetition of the final policy's generations.

The judge is the gold judge when the task has one (the synthetic task); a real dataset has none, so its win rates
and policy-pair labels come from the configured LLM judge (``judge.kind``: local or openai) and there are no gold
scores (no gold-oracle checkpoint). ``judge`` in the metrics names the judge behind every win rate and label.
Writes ``metrics/eval/<run>.json`` and ``metrics/eval/<run>_generations.jsonl``.
"""

from __future__ import annotations

from pathlib import Path

from r2m.config import Config
from r2m.data.io import PAIR_SCHEMA, read_json, read_jsonl, write_json, write_jsonl
from r2m.data.rows import generation_rows, gold_key
from r2m.evaluation.accuracy import ACCURACY_KEYS, pair_accuracy, pairs_digest
from r2m.evaluation.checkpoints import choose, round_dirs, window_mean
from r2m.evaluation.compare import compare
from r2m.evaluation.generations import eval_generations
from r2m.evaluation.policy_pairs import policy_pairs, run_reward
from r2m.evaluation.text_stats import batch_stats
from r2m.judges.factory import build_judge, judge_label
from r2m.judges.gold import gold_judge, load_gold
from r2m.models.builders import load_causal_lm
from r2m.models.reward_model import RewardModel
from r2m.paths import SFT_GENERATIONS, Paths
from r2m.prompts import render_prompts_counted
from r2m.rl.callbacks import read_rows

WIN_KEYS = ("win_rate_ties_half", "ci_low", "ci_high", "n_valid", "wins", "ties", "losses", "lc_win_rate")


def _win_summary(report: dict) -> dict:
    """The :data:`WIN_KEYS` of a win-rate report."""
    return {k: report[k] for k in WIN_KEYS if k in report}


def exported_accuracy(final: Path, test: list[dict]) -> dict | None:
    """The RM-test accuracy an R2M run exported with its final head (``final/rm_accuracy.json``: the same reward,
    final policy feedback at t = T, on the same pairs, so the same numbers) when it was scored on exactly ``test``;
    None otherwise (a run without a head, or an export of other pairs: score them here)."""
    f = final / "rm_accuracy.json"
    if not f.exists():
        return None
    acc = read_json(f)
    if acc.get("pairs") != pairs_digest(test) or acc.get("n") != len(test):
        return None
    return {k: acc[k] for k in ACCURACY_KEYS}


def _frozen_score(rm: RewardModel, rows: list[dict], gens: list[str], max_length: int) -> float:
    return float(rm.score_texts([r["prompt"] + g for r, g in zip(rows, gens, strict=True)], max_length).mean())


def checkpoint_table(
    cfg: Config,
    paths: Paths,
    run: str,
    rows: list[dict],
    judge,
    gold_fn,
    sft_gens: list[str],
    proxy_rm: RewardModel,
    final_gens: list[str] | None = None,
    final_wins: dict | None = None,
) -> dict:
    """Every round scored by proxy / held-out / gold (``gold_fn``; None: no gold scores), the checkpoint choices with
    their win rates (``judge``).

    ``final_gens``: the final policy's eval generations, reused for the round ``final/`` is a copy of (greedy, so
    the same text) instead of generating them again; ``final_wins``: its win-rate reports (``vs_reference``,
    ``vs_sft``), reused for that round instead of judging the same pairs again."""
    final_info = paths.rl_run(run) / "final" / "round.json"
    final_round = read_json(final_info)["round"] if final_info.exists() else None
    heldout_rm = RewardModel.load(paths.rm_heldout) if paths.rm_heldout.exists() else None
    steps = read_rows(paths.rl_run(run) / "metrics.jsonl")
    width = max(1, cfg.rl.steps // cfg.rl.rounds // 4)
    ml = cfg.reward_model.max_length
    rounds, gens_of = [], []
    for k, step, d in round_dirs(paths.rl_run(run)):
        if final_gens is not None and k == final_round:
            gens = final_gens
        else:
            model, tok = load_causal_lm(d / "policy")
            gens = eval_generations(model, tok, rows, cfg)
        entry = {"round": k, "step": step, "proxy": _frozen_score(proxy_rm, rows, gens, ml)}
        if gold_fn is not None:
            gold = gold_fn([gold_key(r) for r in rows], gens)
            entry["gold"] = sum(gold) / len(gold)
        if heldout_rm is not None:
            entry["heldout"] = _frozen_score(heldout_rm, rows, gens, ml)
        for key, name in (("kl_to_ref", "train_kl"), ("gold_score", "train_gold")):
            if (v := window_mean(steps, key, step, width)) is not None:
                entry[name] = v
        entry.update({f"policy_{k2}": v for k2, v in batch_stats(gens).items()})
        rounds.append(entry)
        gens_of.append(gens)
    refs = [" " + r["reference"] for r in rows]
    wins: dict[int, dict] = {}
    checkpoints = {}
    for choice, i in choose(rounds).items():
        if i not in wins and final_wins is not None and final_gens is not None and rounds[i]["round"] == final_round:
            wins[i] = {k: _win_summary(rep) for k, rep in final_wins.items()}
        if i not in wins:
            vs_ref = compare(judge, rows, gens_of[i], refs, "ref", progress=False)[0]
            vs_sft = compare(judge, rows, gens_of[i], sft_gens, "sft", progress=False)[0]
            wins[i] = {"vs_reference": _win_summary(vs_ref), "vs_sft": _win_summary(vs_sft)}
        checkpoints[choice] = {
            **{k: rounds[i][k] for k in ("round", "step", "proxy", "heldout", "gold") if k in rounds[i]},
            **wins[i],
        }
    return {"rounds": rounds, "checkpoints": checkpoints}


def evaluate(cfg: Config, workdir: str | Path = ".", algo: str = "grpo", method: str = "vanilla") -> dict:
    paths = Paths.of(cfg, workdir)
    run = f"{algo}-{method}"
    policy_dir = paths.rl_run(run) / "final" / "policy"
    if not policy_dir.exists():
        raise FileNotFoundError(f"{policy_dir}: no final policy; run the rl stage for {run} first")
    model, tok = load_causal_lm(policy_dir)
    rows = read_jsonl(paths.data / "eval_prompts.jsonl", stage_input=True)
    gens = eval_generations(model, tok, rows, cfg)
    sft_gens = {g["id"]: g["completion"] for g in read_jsonl(paths.sft / SFT_GENERATIONS)}
    metrics: dict = {"run": run, **{f"policy_{k}": v for k, v in batch_stats(gens).items()}}
    metrics["prompts_truncated"] = render_prompts_counted(tok, [r["prompt"] for r in rows], cfg.policy)[1]
    posts, gold_fn = load_gold(paths)
    judge = gold_judge(posts, gold_fn) if gold_fn is not None else build_judge(cfg, paths)
    if gold_fn is None:  # no "judge" key: the gold judge (the synthetic task's files keep their bytes)
        metrics["judge"] = judge_label(cfg)
    score = run_reward(cfg, paths, paths.rl_run(run) / "final", model, tok)
    test = read_jsonl(paths.data / "rm_test.jsonl", PAIR_SCHEMA)
    metrics["rm_test"] = exported_accuracy(paths.rl_run(run) / "final", test) or pair_accuracy(score, test)
    own = score([r["prompt"] for r in rows], gens)
    metrics["policy_train_reward_mean"] = sum(own) / len(own)
    proxy_rm = RewardModel.load(paths.rm)
    metrics["policy_proxy_mean"] = _frozen_score(proxy_rm, rows, gens, cfg.reward_model.max_length)
    refs = [" " + r["reference"] for r in rows]
    metrics["vs_reference"] = compare(judge, rows, gens, refs, "ref", progress=False)[0]
    metrics["vs_sft"] = compare(judge, rows, gens, [sft_gens[r["id"]] for r in rows], "sft", progress=False)[0]
    if gold_fn is not None:
        gold = gold_fn([gold_key(r) for r in rows], gens)
        metrics["policy_gold_mean"] = sum(gold) / len(gold)
    pairs = policy_pairs(model, tok, rows, judge, cfg, calibrate=judge.name != "gold")  # as `r2m evaluate` labels
    if pairs:
        metrics["rm_policy_pairs"] = pair_accuracy(score, pairs)
    sft = [sft_gens[r["id"]] for r in rows]
    final_wins = {"vs_reference": metrics["vs_reference"], "vs_sft": metrics["vs_sft"]}
    metrics.update(
        checkpoint_table(cfg, paths, run, rows, judge, gold_fn, sft, proxy_rm, final_gens=gens, final_wins=final_wins)
    )
    out = paths.metrics / "eval"
    write_jsonl(out / f"{run}_generations.jsonl", generation_rows(rows, gens))
    write_json(out / f"{run}.json", metrics)
    return {"metrics": metrics}
