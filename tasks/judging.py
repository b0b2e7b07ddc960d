"""``r2m judge`` and ``r2m evaluate``: judge a finished pipeline's outputs with the gold, an OpenAI-compatible or a
local LLM judge (``judge.kind``), every pair in both orders.

The generation sources (``--a`` / ``--b`` of ``r2m judge``: ``reference``, ``sft``, ``<algo>-<method>``,
``<algo>-<method>@round_<k>`` or a ``.jsonl`` file) are described in :mod:`r2m.evaluation.generations`; the judging is
:func:`r2m.evaluation.compare.compare` (shared with the evaluate stage), the Markdown :mod:`r2m.evaluation.report`.

Everything goes to ``reports/<judge>/`` (``<judge>`` is ``gold``, ``local-<model>`` or ``openai-<model>``): a JSON
report, a Markdown table and one JSONL of verdicts per comparison (both orders' raw replies kept). With MLflow on,
one run per command holds the judge's parameters (never a key), the rates, token/cost counts and the files.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r2m.config import Config
from r2m.data.io import read_json, write_json, write_jsonl
from r2m.evaluation.compare import compare, comparison_pairs
from r2m.evaluation.generations import eval_rows, generations
from r2m.evaluation.policy_pairs import judged_policy_pairs
from r2m.evaluation.report import render_comparison, render_report
from r2m.judges.base import Judge
from r2m.judges.factory import build_judge, describe, judge_label, reference_judge, usage
from r2m.paths import Paths
from tasks.common import set_threads, tracked


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", Path(name).stem if name.endswith(".jsonl") else name)


def _log(cfg: Config, workdir: Path, name: str, judge: Judge, result: dict, files: Sequence[Path]) -> None:
    from r2m import tracking

    with tracked(name, cfg, workdir, None, {"judge": describe(judge)}):
        tracking.log_metrics_dict(result["metrics"])
        for f in files:
            tracking.log_artifacts(f)


def judge_command(
    cfg: Config, workdir: str | Path, a: str, b: str, mlflow: bool = True, progress: bool = True
) -> dict[str, Any]:
    """``r2m judge``: one comparison, ``a`` (under test) vs ``b``; writes ``reports/<judge>/<a>_vs_<b>.*``."""
    set_threads(cfg)
    paths = Paths.of(cfg, workdir)
    rows = eval_rows(cfg, paths)
    ga, gb = generations(cfg, paths, a, rows), generations(cfg, paths, b, rows)
    judge = build_judge(cfg, paths)
    t0 = time.perf_counter()
    ref = reference_judge(cfg, paths)
    report, records = compare(judge, rows, ga, gb, f"{_slug(a)}-vs-{_slug(b)}", progress=progress, reference_judge=ref)
    out = paths.root / "reports" / judge_label(cfg)
    stem = f"{_slug(a)}_vs_{_slug(b)}"
    verdict_file = out / f"{stem}_verdicts.jsonl"
    write_jsonl(verdict_file, records)
    u = {**usage(judge), "judge_seconds": time.perf_counter() - t0}
    result = {"a": a, "b": b, "judge": describe(judge), "report": report, "usage": u}
    json_file = out / f"{stem}.json"
    write_json(json_file, result)
    md = render_comparison(judge_label(cfg), len(rows), a, b, report, u)
    md_file = out / f"{stem}.md"
    md_file.write_text(md)
    result.update(markdown=md, files=[json_file, md_file, verdict_file])
    result["metrics"] = {**report, **u}
    if mlflow:
        _log(cfg, paths.root, f"judge-{stem}", judge, result, result["files"])
    return result


def _comparisons(cfg: Config, paths: Paths) -> tuple[list[str], list[tuple[str, str]]]:
    runs = [r for r in cfg.run_names() if (paths.metrics / "eval" / f"{r}_generations.jsonl").exists()]
    if not runs:
        raise FileNotFoundError(
            f"{paths.metrics / 'eval'}: no run generations for {cfg.run_names()}; run the pipeline first (r2m run)"
        )
    return runs, comparison_pairs(runs)


def evaluate_command(cfg: Config, workdir: str | Path, mlflow: bool = True, progress: bool = True) -> dict[str, Any]:
    """``r2m evaluate``: the evaluation report of a pipeline's runs with the configured judge.

    Per run: win rates vs the references and vs SFT, each non-vanilla method head-to-head against vanilla RL of
    the same algorithm, RM accuracy on the static held-out pairs (from the evaluate stage) and on policy pairs
    labelled by this judge, and the over-optimisation numbers of the RL run. Writes ``reports/<judge>/report.*``.
    """
    set_threads(cfg)
    paths = Paths.of(cfg, workdir)
    rows = eval_rows(cfg, paths)
    runs, pairs = _comparisons(cfg, paths)
    judge = build_judge(cfg, paths)
    ref = reference_judge(cfg, paths)
    label = judge_label(cfg)
    out = paths.root / "reports" / label
    t0 = time.perf_counter()
    cache: dict[str, list[str]] = {}

    def gens(source: str) -> list[str]:
        if source not in cache:
            cache[source] = generations(cfg, paths, source, rows)
        return cache[source]

    win: list[dict] = []
    files: list[Path] = []
    for a, b in pairs:
        rep, records = compare(judge, rows, gens(a), gens(b), f"{a}-vs-{b}", progress=progress, reference_judge=ref)
        win.append({"a": a, "b": b, **rep})
        files.append(out / f"{a}_vs_{b}_verdicts.jsonl")
        write_jsonl(files[-1], records)
    acc: dict[str, dict] = {}
    for run in runs:
        ev_file = paths.metrics / "eval" / f"{run}.json"
        static = read_json(ev_file).get("rm_test") if ev_file.exists() else None
        acc[run] = {"rm_test": static, "policy_pairs": judged_policy_pairs(cfg, paths, run, judge, rows)}
    overopt = {run: _overopt(paths, run) for run in runs}
    u = {**usage(judge), "judge_seconds": time.perf_counter() - t0}
    report = {
        "judge": describe(judge),
        "n_prompts": len(rows),
        "win_rates": win,
        "reward_accuracy": acc,
        "over_optimisation": overopt,
        "usage": u,
    }
    md = render_report(cfg, label, report)
    json_file = out / "report.json"
    write_json(json_file, report)
    md_file = out / "report.md"
    md_file.write_text(md)
    files = [json_file, md_file, *files]
    metrics = {f"{w['a']}_vs_{w['b']}.win_rate_ties_half": w["win_rate_ties_half"] for w in win}
    metrics.update({f"{w['a']}_vs_{w['b']}.lc_win_rate": w.get("lc_win_rate") for w in win})
    for run, a in acc.items():
        if a["policy_pairs"]:
            metrics[f"{run}.rm_policy_pairs_accuracy"] = a["policy_pairs"]["accuracy"]
    metrics.update({f"judge.{k}": v for k, v in u.items()})
    result = {**report, "markdown": md, "files": files, "metrics": metrics}
    if mlflow:
        plots = sorted(paths.plots.glob("*.png"))
        _log(cfg, paths.root, f"evaluate-{label}", judge, result, [*files, *plots])
    return result


def _overopt(paths: Paths, run: str) -> dict[str, Any]:
    f = paths.metrics / "rl" / f"{run}.json"
    if not f.exists():
        return {}
    rl = read_json(f)
    keys = (
        "proxy_reward_initial",
        "proxy_reward_final",
        "gold_score_initial",
        "gold_peak_ma",
        "gold_peak_step",
        "gold_score_final",
        "kl_to_ref_final",
        "completion_words_final",
    )
    return {k: rl[k] for k in keys if k in rl}
