"""``r2m judge`` and ``r2m evaluate``: judge a finished pipeline's outputs with the gold, an OpenAI-compatible or a
local LLM judge (``judge.kind``), every pair in both orders.

Generation sources (``--a`` / ``--b`` of ``r2m judge``):

- ``reference``: the eval prompts' reference summaries;
- ``sft``: the SFT policy's greedy generations (written by the sft stage);
- ``<algo>-<method>``: a run's final-policy generations (written by its evaluate stage);
- ``<algo>-<method>@round_<k>``: that run's round-k checkpoint, generated here (greedy, ``evaluate.*`` settings);
- a ``.jsonl`` file with ``id`` and ``completion`` per eval prompt (e.g. another system's outputs).

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

from r2m.config import Config, ConfigError
from r2m.data.io import read_json, read_jsonl, write_json, write_jsonl
from r2m.evaluation.accuracy import pair_accuracy
from r2m.evaluation.agreement import judge_agreement
from r2m.evaluation.winrate import position_calibrated, win_rate_report
from r2m.judges.base import Judge, PairwiseItem, Verdict
from tasks.common import Paths, gold_judge, load_gold, set_threads, tracked
from tasks.sft import SFT_GENERATIONS

GENERATION_SCHEMA: dict[str, type] = {"id": str, "completion": str}
_ROUND = re.compile(r"^(?P<run>[a-z]+-[a-z0-9_]+)@(?P<round>round_\d+|final)$")


def build_judge(cfg: Config, paths: Paths) -> Judge:
    """The judge named by ``cfg.judge.kind``; gold needs the embedded task's ``data/posts.jsonl``."""
    kind = cfg.judge.kind
    if kind == "gold":
        posts, gold_fn = load_gold(paths)
        if gold_fn is None:
            raise ConfigError(
                f"judge.kind=gold: {paths.data / 'posts.jsonl'} not found (only the embedded task has a gold judge); "
                "use --judge local or --judge openai"
            )
        return gold_judge(posts, gold_fn)
    if kind == "openai":
        from r2m.judges.openai_compat import OpenAICompatibleJudge

        return OpenAICompatibleJudge.from_config(cfg.judge, paths.root)
    from r2m.judges.local import LocalChatJudge

    return LocalChatJudge.from_config(cfg.judge, paths.root)


def reference_judge(cfg: Config, paths: Paths) -> Judge | None:
    """The gold judge to measure an LLM judge against (``None`` for the gold judge itself or without a gold task)."""
    if cfg.judge.kind == "gold":
        return None
    posts, gold_fn = load_gold(paths)
    return None if gold_fn is None else gold_judge(posts, gold_fn)


def judge_label(cfg: Config) -> str:
    """Directory-safe judge name: ``gold``, ``local-smollm2-direct``, ``openai-gpt-4o-mini`` (plus the template when
    it is not ``tldr``), so reports of different judges never overwrite each other."""
    jc = cfg.judge
    parts = [jc.kind]
    if jc.kind == "openai":
        parts.append(Path(jc.model).name)
    if jc.kind == "local":
        parts += [Path(jc.local_model).name, *([jc.local_answer] if jc.local_answer != "generate" else [])]
    if jc.kind != "gold" and jc.template != "tldr":
        parts.append(Path(jc.template).stem)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))


def describe(judge: Judge) -> dict[str, Any]:
    """Loggable judge parameters (LLM judges describe themselves; nothing secret is ever included)."""
    return judge.describe() if hasattr(judge, "describe") else {"kind": judge.name}


def usage(judge: Judge) -> dict[str, Any]:
    """Requests / cache hits / tokens / cost of an LLM judge so far (empty for gold)."""
    return judge.usage() if hasattr(judge, "usage") else {}


def eval_rows(cfg: Config, paths: Paths) -> list[dict]:
    """The eval prompts, the first ``judge.max_items`` of them when that is set."""
    rows = read_jsonl(paths.data / "eval_prompts.jsonl")
    return rows[: cfg.judge.max_items] if cfg.judge.max_items > 0 else rows


def _by_id(path: Path, rows: list[dict]) -> list[str]:
    """Completions from a JSONL of ``{"id", "completion"}`` rows, aligned with ``rows`` (every id must be there)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found")
    got = {g["id"]: g["completion"] for g in read_jsonl(path, GENERATION_SCHEMA, allow_empty_str=True)}
    missing = [r["id"] for r in rows if r["id"] not in got]
    if missing:
        raise ValueError(f"{path}: no completion for {len(missing)} eval prompt id(s), e.g. {missing[:3]} (field 'id')")
    return [got[r["id"]] for r in rows]


def _generate_from(cfg: Config, policy_dir: Path, rows: list[dict]) -> list[str]:
    from r2m.models.builders import load_causal_lm
    from tasks.evaluate import eval_generations

    if not policy_dir.exists():
        raise FileNotFoundError(f"{policy_dir}: no such checkpoint")
    model, tok = load_causal_lm(policy_dir)
    return eval_generations(model, tok, rows, cfg)


def generations(cfg: Config, paths: Paths, source: str, rows: list[dict]) -> list[str]:
    """Completions of ``source`` (see the module docstring) for ``rows``, in order."""
    if source == "reference":
        return [" " + r["reference"] for r in rows]
    if source == "sft":
        return _by_id(paths.sft / SFT_GENERATIONS, rows)
    if source.endswith(".jsonl"):
        return _by_id(Path(source), rows)
    m = _ROUND.match(source)
    if m:
        return _generate_from(cfg, paths.rl_run(m["run"]) / m["round"] / "policy", rows)
    path = paths.metrics / "eval" / f"{source}_generations.jsonl"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no generations for {source!r}; run its evaluate stage, or use reference, sft, "
            "<algo>-<method>@round_<k> or a .jsonl file"
        )
    return _by_id(path, rows)


def compare(
    judge: Judge,
    rows: list[dict],
    a: list[str],
    b: list[str],
    tag: str,
    progress: bool = True,
    reference_judge: Judge | None = None,
) -> tuple[dict[str, Any], list[dict]]:
    """Judge ``a`` (model under test) against ``b`` on the same prompts, both orders.

    Returns the win-rate report (with LC win rate on word counts) and one record per prompt for the verdict file.
    With a ``reference_judge`` (the gold judge, when the task has one and ``judge`` is an LLM) the report also
    holds ``gold_agreement``: how often ``judge`` agrees with it on these very items.
    """
    items = [
        PairwiseItem(f"{r['id']}:{tag}", r["prompt"], x, y, {"post_id": r.get("post_id", r["id"])})
        for r, x, y in zip(rows, a, b, strict=True)
    ]
    verdicts: list[Verdict] = judge.judge(items, both_orders=True, progress=progress)
    report = win_rate_report(
        verdicts, lengths_a=[len(x.split()) for x in a], lengths_b=[len(y.split()) for y in b], seed=0
    )
    gold: list[Verdict | None] = [None] * len(items)
    if reference_judge is not None:
        gold = reference_judge.judge(items, both_orders=True)
        report["gold_agreement"] = judge_agreement(verdicts, gold)
    calibrated = position_calibrated(verdicts) if judge.name != "gold" else None
    if calibrated is not None:  # a judge reporting P(A), P(B): also decide by the order-averaged probabilities
        cal = win_rate_report(calibrated, seed=0)
        report["position_calibrated"] = {k: cal[k] for k in ("wins", "ties", "losses", "invalid", "win_rate_ties_half")}
        report["position_calibrated"].update(ci_low=cal["ci_low"], ci_high=cal["ci_high"])
        if reference_judge is not None:
            report["position_calibrated"]["gold_agreement"] = judge_agreement(calibrated, gold)
    records = [
        {
            "id": it.id,
            "prompt": it.prompt,
            "response_a": it.response_a,
            "response_b": it.response_b,
            "preferred": v.preferred,
            "consistent": v.consistent,
            "reason": v.reason,
            "raw": v.raw,
            "score_a": v.score_a,
            "score_b": v.score_b,
            **({"gold": g.preferred} if g is not None else {}),
        }
        for it, v, g in zip(items, verdicts, gold, strict=True)
    ]
    return report, records


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", Path(name).stem if name.endswith(".jsonl") else name)


def _rate(rep: dict) -> str:
    if rep.get("win_rate_ties_half") is None:
        return "-"
    return f"{rep['win_rate_ties_half']:.2f} [{rep['ci_low']:.2f}, {rep['ci_high']:.2f}]"


def _fmt(value: Any, spec: str = "{:.2f}") -> str:
    return "-" if value is None else spec.format(value)


WIN_HEADER = (
    "| A | B | n | wins / ties / losses / invalid | win rate | win rate (ties 1/2) [95% CI] | LC win rate "
    "| position consistency | agreement with gold |\n|---|---|---|---|---|---|---|---|---|\n"
)


def _agreement(rep: dict) -> str:
    g = rep.get("gold_agreement")
    if not g or g["agreement"] is None:
        return "-"
    return f"{g['agreement']:.2f} ({g['n_compared']})"


def win_row(a: str, b: str, rep: dict) -> str:
    """One Markdown row of the win-rate table."""
    counts = f"{rep['wins']} / {rep['ties']} / {rep['losses']} / {rep['invalid']}"
    return (
        f"| {a} | {b} | {rep['n']} | {counts} | {_fmt(rep['win_rate'])} | {_rate(rep)} | "
        f"{_fmt(rep.get('lc_win_rate'))} | {_fmt(rep['position_consistency'])} | {_agreement(rep)} |\n"
    )


def _usage_line(u: dict) -> str:
    """``Judge usage: requests 12, cache_hits 0, ...`` from a judge's usage counters."""
    items = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in u.items() if isinstance(v, int | float)]
    return f"Judge usage: {', '.join(items)}.\n" if items else ""


def _log(cfg: Config, workdir: Path, name: str, judge: Judge, result: dict, files: Sequence[Path]) -> None:
    from r2m import tracking

    with tracked(name, cfg, workdir, None, extra_params={"judge": describe(judge)}):
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
    md = f"Judge `{judge_label(cfg)}` on {len(rows)} eval prompts, both orders.\n\n"
    md += WIN_HEADER + win_row(a, b, report)
    md += "\n" + _usage_line(u)
    md_file = out / f"{stem}.md"
    md_file.write_text(md)
    result.update(markdown=md, files=[json_file, md_file, verdict_file])
    result["metrics"] = {**report, **u}
    if mlflow:
        _log(cfg, paths.root, f"judge-{stem}", judge, result, result["files"])
    return result


def judged_policy_pairs(cfg: Config, paths: Paths, run: str, judge: Judge, rows: list[dict]) -> dict | None:
    """RM accuracy of ``run``'s reward (R2M at t = T for R2M runs) on pairs sampled from its final policy and
    labelled by ``judge`` (strict; pairs the judge ties or cannot parse are dropped). An LLM judge that reports
    P(A), P(B) labels by its position-calibrated verdicts."""
    from r2m.models.builders import load_causal_lm
    from tasks.evaluate import policy_pairs, run_reward

    model, tok = load_causal_lm(paths.rl_run(run) / "final" / "policy")
    pairs = policy_pairs(model, tok, rows, judge, cfg, progress=True, calibrate=judge.name != "gold")
    if not pairs:
        return None
    score = run_reward(cfg, paths, paths.rl_run(run) / "final", model, tok)
    return {**pair_accuracy(score, pairs), "n_sampled": min(len(rows), cfg.evaluate.n_policy_pairs)}


def _comparisons(cfg: Config, paths: Paths) -> tuple[list[str], list[tuple[str, str]]]:
    runs = [r for r in cfg.run_names() if (paths.metrics / "eval" / f"{r}_generations.jsonl").exists()]
    if not runs:
        raise FileNotFoundError(
            f"{paths.metrics / 'eval'}: no run generations for {cfg.run_names()}; run the pipeline first (r2m run)"
        )
    pairs = [(r, base) for r in runs for base in ("reference", "sft")]
    for r in runs:
        algo, method = r.split("-", 1)
        if method != "vanilla" and f"{algo}-vanilla" in runs:
            pairs.append((r, f"{algo}-vanilla"))  # the head-to-head: each method vs vanilla RL, same algorithm
    return runs, pairs


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


def calibrated_table(win: list[dict]) -> str:
    """The position-calibrated rates (judges that report P(A), P(B)); "" when no comparison has them."""
    rows = [w for w in win if w.get("position_calibrated")]
    if not rows:
        return ""
    out = (
        "\nPosition-calibrated (the winner by P(A), P(B) averaged over both orders; Wang et al. 2023):\n\n"
        "| A | B | wins / ties / losses / invalid | win rate (ties 1/2) [95% CI] | agreement with gold |\n"
        "|---|---|---|---|---|\n"
    )
    for w in rows:
        c = w["position_calibrated"]
        counts = f"{c['wins']} / {c['ties']} / {c['losses']} / {c['invalid']}"
        out += f"| {w['a']} | {w['b']} | {counts} | {_rate(c)} | {_agreement(c)} |\n"
    return out


def render_report(cfg: Config, label: str, report: dict) -> str:
    """The Markdown report of :func:`evaluate_command`."""
    lines = [
        f"# Evaluation report: judge `{label}`\n\n",
        f"Profile `{cfg.profile}`, seed {cfg.seed}, {report['n_prompts']} eval prompts; every pair judged in both "
        "orders (disagreement = tie, unparseable = invalid, excluded from rates). 95% CI: bootstrap over prompts. "
        "LC: length-controlled (AlpacaEval-2 style, word counts).\n\n",
        "## Win rates (A = model under test)\n\n",
        WIN_HEADER + "".join(win_row(w["a"], w["b"], w) for w in report["win_rates"]),
        calibrated_table(report["win_rates"]),
        "\n## Reward-model accuracy (strict: ties are wrong)\n\n",
        "| run | held-out pairs: acc / ECE (n) | policy pairs labelled by this judge*: acc / ECE (n) |\n",
        "|---|---|---|\n",
    ]
    for run, a in report["reward_accuracy"].items():
        cells = []
        for k in ("rm_test", "policy_pairs"):
            v = a.get(k)
            cells.append("-" if not v else f"{v['accuracy']:.3f} / {v['ece']:.3f} ({v['n']})")
        lines.append(f"| {run} | {cells[0]} | {cells[1]} |\n")
    lines.append(
        "\n*Two samples per prompt from the final policy; pairs the judge ties are dropped; a judge reporting P(A), "
        "P(B) labels by its position-calibrated verdicts.\n"
    )
    lines.append("\n## Over-optimisation (RL run: proxy vs gold reward)\n\n")
    lines.append("| run | proxy start -> end | gold start -> peak (step) -> end | KL end | words end |\n")
    lines.append("|---|---|---|---|---|\n")
    for run, o in report["over_optimisation"].items():
        if not o:
            lines.append(f"| {run} | - | - | - | - |\n")
            continue
        gold = (
            f"{_fmt(o.get('gold_score_initial'))} -> {_fmt(o.get('gold_peak_ma'))} ({o.get('gold_peak_step', '-')})"
            f" -> {_fmt(o.get('gold_score_final'))}"
        )
        proxy = f"{_fmt(o.get('proxy_reward_initial'))} -> {_fmt(o.get('proxy_reward_final'))}"
        lines.append(
            f"| {run} | {proxy} | {gold} | {_fmt(o.get('kl_to_ref_final'), '{:.1f}')} | "
            f"{_fmt(o.get('completion_words_final'), '{:.1f}')} |\n"
        )
    lines.append("\nPlots: `plots/proxy_vs_gold.png`, `plots/gold_vs_kl.png`, `plots/length.png`.\n")
    line = _usage_line(report["usage"])
    if line:
        lines.append("\n" + line)
    return "".join(lines)
