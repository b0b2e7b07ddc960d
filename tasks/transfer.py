"""Stages ``transfer`` and ``transfer_eval``: empirical TPO beside its baselines (r2m/transfer).

``transfer`` trains every variant of ``transfer.variants`` (TPO, plain online DPO, each source alone) from the SFT
policy for ``transfer.iterations`` iterations -> ``models/transfer/<run>/iter_<i>/`` and
``metrics/transfer/train.json`` (per variant and iteration: where the collection went, the sources' win rates, the
annotations used). ``transfer_eval`` judges TPO's policy after each iteration against every baseline's after the
same iteration on the held-out prompts -> ``metrics/transfer/eval.json`` and ``plots/transfer_selection.png``.

The human is the embedded task's gold judge (a score per response, counted against ``transfer.budget``); a real
dataset has none yet, and is refused with one line.
"""

from __future__ import annotations

from pathlib import Path

from r2m.config import Config, ConfigError
from r2m.data.io import read_json, read_jsonl, write_json
from r2m.data.rows import gold_key
from r2m.judges.gold import gold_judge, load_gold
from r2m.paths import Paths
from r2m.transfer.evaluate import greedy_completions, plot_selection, win_rates
from r2m.transfer.loop import run_name
from r2m.transfer.run import run_variant
from r2m.transfer.specs import expand_variants, parse_sources
from r2m.transfer.ucb import ONLINE

TRAIN_FILE = "train.json"
EVAL_FILE = "eval.json"


def _gold(paths: Paths):
    posts, gold_fn = load_gold(paths)
    if gold_fn is None:
        raise ConfigError(
            "transfer: the human of empirical TPO is the gold judge of the embedded task (data.source=synthetic); "
            "a real dataset has no per-response scorer yet"
        )
    return posts, gold_fn


def transfer(cfg: Config, workdir: str | Path = ".", progress: bool = True) -> dict:
    from r2m.transfer.sources import build_source

    paths = Paths.of(cfg, workdir)
    _, gold_fn = _gold(paths)
    specs = parse_sources(cfg.transfer.sources)
    sources = {s.name: build_source(s, workdir, max_length=cfg.reward_model.max_length) for s in specs}
    rows = read_jsonl(paths.data / "rl_prompts.jsonl", {"id": str, "prompt": str, "reference": str}, stage_input=True)

    def human(row, texts):
        return gold_fn([gold_key(row)] * len(texts), texts)

    out = paths.models / "transfer"
    variants = expand_variants(cfg.transfer.variants, list(sources))
    summary = {
        v: run_variant(v, paths.sft, out, rows, sources, human, cfg.transfer, cfg.policy, cfg.seed) for v in variants
    }
    compact = {run_name(v): [{k: s[k] for k in s if k != "dpo"} for s in its] for v, its in summary.items()}
    write_json(paths.metrics / "transfer" / TRAIN_FILE, compact)
    return {"metrics": {f"{run_name(v)}.annotations": its[-1]["annotations_total"] for v, its in summary.items()}}


def transfer_eval(cfg: Config, workdir: str | Path = ".", progress: bool = True) -> dict:
    paths = Paths.of(cfg, workdir)
    posts, gold_fn = _gold(paths)
    judge = gold_judge(posts, gold_fn)
    train = read_json(paths.metrics / "transfer" / TRAIN_FILE)
    names = [s.name for s in parse_sources(cfg.transfer.sources)]
    variants = expand_variants(cfg.transfer.variants, names)
    if "tpo" not in variants or len(variants) < 2:
        raise ConfigError("transfer_eval: transfer.variants needs tpo and at least one baseline")
    rows = read_jsonl(paths.data / "eval_prompts.jsonl", stage_input=True)[: cfg.transfer.n_eval]
    baselines = [v for v in variants if v != "tpo"]
    out: dict = {"judge": judge.name, "n_eval": len(rows), "iterations": []}
    for i in range(1, cfg.transfer.iterations + 1):
        gens = {
            v: greedy_completions(
                paths.models / "transfer" / run_name(v) / f"iter_{i}" / "policy",
                rows,
                cfg.policy,
                cfg.transfer.max_new_tokens,
            )
            for v in variants
        }
        out["iterations"].append(
            {
                "iteration": i,
                "tpo_vs": {run_name(b): r for b, r in win_rates(judge, rows, gens, "tpo", baselines).items()},
                "selection": train["tpo"][i - 1]["selection"],
                "annotations_total": {run_name(v): train[run_name(v)][i - 1]["annotations_total"] for v in variants},
            }
        )
    write_json(paths.metrics / "transfer" / EVAL_FILE, out)
    plot_selection(
        {it["iteration"]: it["selection"] for it in out["iterations"]},
        [*names, ONLINE],
        paths.plots / "transfer_selection.png",
    )
    last = out["iterations"][-1]["tpo_vs"]
    return {"metrics": {f"tpo_vs_{run_name(b)}": last[run_name(b)]["win_rate_ties_half"] for b in baselines}}
