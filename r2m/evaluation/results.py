"""The results protocol: every (algo, method) over seeds, as means with 95% confidence intervals.

One run is ``(seed, algo, method)``. Its numbers come from the files the pipeline writes in that seed's working
directory:

- ``models/rl/<algo>-<method>/metrics.jsonl``: one row per optimiser step (``step``, ``gold_score``,
  ``proxy_reward``, ``kl_to_ref``, ``completion_words``, ``repeated_trigrams``, ...);
- ``metrics/eval/<algo>-<method>.json``: ``checkpoints.{final,best_proxy,best_heldout,oracle}``, each with its
  ``gold`` score and the gold judge's win-rate reports ``vs_sft`` / ``vs_reference``.

:func:`run_metrics` turns them into one flat dict per run (the names in :data:`METRICS`; a key the files lack leaves
its metric out). :func:`aggregate` gives, per (algo, method), the mean and the Student-t 95% CI half-width over seeds,
and per method the paired difference to the baseline (same seed) with its CI and a verdict; :func:`plot_frontier`
draws gold and proxy against sqrt(KL) (Gao et al., 2022). Orchestration lives in ``flows/results.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from r2m.data.io import read_json, read_jsonl, write_json
from r2m.evaluation.plots import save_figure, series, step_moving_average
from r2m.rl.methods import METHODS as METHOD_TABLE

CONFIDENCE = 0.95
SMOOTH_STEPS = 10  # the moving-average window (steps) of the peak, the initial / final values and the curves
BASELINE = "vanilla"  # the paired differences are method - BASELINE
CHECKPOINTS = ("final", "best_proxy", "best_heldout", "oracle")  # r2m.evaluation.checkpoints.CHOICES
WIN_RATE_CHECKPOINTS = ("final", "best_heldout")
OPPONENTS = ("vs_sft", "vs_reference")

# name -> (format spec, meaning). Training-curve metrics are read from the per-step rows; "<x>@<checkpoint>" from the
# evaluation of that checkpoint.
METRICS: dict[str, tuple[str, str]] = {
    "gold_initial": (".3f", f"gold score, mean of the first {SMOOTH_STEPS} steps"),
    "gold_peak": (".3f", f"peak of the {SMOOTH_STEPS}-step moving average of the gold score"),
    "gold_peak_step": (".1f", "step at the centre of that peak window"),
    "kl_at_gold_peak": (".3f", "KL to the reference, mean over the peak window"),
    "gold_final": (".3f", f"gold score, mean of the last {SMOOTH_STEPS} steps"),
    "proxy_initial": (".3f", f"proxy (frozen vanilla RM) score, mean of the first {SMOOTH_STEPS} steps"),
    "proxy_final": (".3f", f"proxy score, mean of the last {SMOOTH_STEPS} steps"),
    "kl_final": (".3f", f"KL to the reference, mean of the last {SMOOTH_STEPS} steps"),
    "gold_at_matched_kl": (
        ".3f",
        f"gold score ({SMOOTH_STEPS}-step moving average) where the run's smoothed sqrt(KL) first reaches the "
        "matched level, the lowest mean final sqrt(KL) among the methods compared (protocol.matched_sqrt_kl)",
    ),
    "words_final": (".1f", f"completion words, mean of the last {SMOOTH_STEPS} steps"),
    "repeated_trigrams_final": (".2f", f"repeated trigrams, mean of the last {SMOOTH_STEPS} steps"),
    **{f"gold@{c}": (".3f", f"gold score of the {c} checkpoint's eval generations") for c in CHECKPOINTS},
    **{
        f"win_{o}@{c}": (".3f", f"win rate {o.replace('_', ' ')} (ties half) of the {c} checkpoint")
        for c in WIN_RATE_CHECKPOINTS
        for o in OPPONENTS
    },
}
# per-step key of each "<prefix>_initial" / "<prefix>_final" metric
STEP_KEYS = {
    "gold": "gold_score",
    "proxy": "proxy_reward",
    "kl": "kl_to_ref",
    "words": "completion_words",
    "repeated_trigrams": "repeated_trigrams",
}


class ResultsError(Exception):
    """Runs are missing or unusable; the message names them."""


# ---- statistics ------------------------------------------------------------------------------------------------


def t_half_width(values: Sequence[float], confidence: float = CONFIDENCE) -> float | None:
    """Half-width of the Student-t confidence interval of the mean of ``values`` (n - 1 dof, sample std);
    None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    sd = float(np.std(np.asarray(values, dtype=float), ddof=1))
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """``{"mean", "half_width" (None for n = 1), "n"}`` of ``values`` (at least one)."""
    return {"mean": float(np.mean(values)), "half_width": t_half_width(values, confidence), "n": len(values)}


def verdict(mean: float, half_width: float | None) -> str:
    """``higher`` / ``lower`` when the interval ``mean +- half_width`` excludes 0, ``tie`` when it contains 0,
    ``n/a`` without an interval."""
    if half_width is None:
        return "n/a"
    if mean - half_width > 0:
        return "higher"
    if mean + half_width < 0:
        return "lower"
    return "tie"


def paired_differences(values: Mapping[int, float], baseline: Mapping[int, float]) -> dict[int, float]:
    """``values[s] - baseline[s]`` for every seed ``s`` both have, in seed order."""
    return {s: values[s] - baseline[s] for s in sorted(set(values) & set(baseline))}


# ---- one run's metrics --------------------------------------------------------------------------------------------


def window_means(values: Sequence[float], window: int = SMOOTH_STEPS) -> np.ndarray:
    """Means of every full window of ``min(window, n)`` consecutive values: [n - w + 1]."""
    v = np.asarray(values, dtype=float)
    w = max(1, min(int(window), v.size))
    csum = np.cumsum(np.insert(v, 0, 0.0))
    return (csum[w:] - csum[:-w]) / w


def moving_average_peak(steps: Sequence[int], values: Sequence[float], window: int = SMOOTH_STEPS) -> dict:
    """The peak of the ``window``-step moving average of ``values`` (first one on ties).

    Returns ``{"value", "step", "start", "stop"}``: the peak mean, the step at the centre of its window (the later
    of the two middle steps for an even window), and the window as a slice ``[start, stop)`` of the rows.
    """
    if len(values) == 0:
        raise ValueError("moving_average_peak: no values")
    ma = window_means(values, window)
    w = len(values) - ma.size + 1
    i = int(np.argmax(ma))
    return {"value": float(ma[i]), "step": int(steps[i + w // 2]), "start": i, "stop": i + w}


def curve_metrics(rows: Sequence[Mapping[str, Any]], window: int = SMOOTH_STEPS) -> dict[str, float]:
    """The training-curve metrics of :data:`METRICS` from a run's per-step rows; a key no row has leaves out the
    metrics that need it."""
    out: dict[str, float] = {}
    all_steps = [float(r["step"]) for r in rows if _number(r.get("step")) is not None]
    if not all_steps:
        return out
    first, last = min(all_steps), max(all_steps)
    w = min(window, len(all_steps))
    for prefix, key in STEP_KEYS.items():
        s, v = series(rows, "step", key)
        # windows of steps, not of values: the KL exists on every rl.monitor_every-th step (and the first and last)
        for name, vals in (("initial", v[s < first + w]), ("final", v[s > last - w])):
            if vals.size:
                out[f"{prefix}_{name}"] = float(np.mean(vals))
    steps, gold = series(rows, "step", "gold_score")
    if gold.size:
        peak = moving_average_peak(steps, gold, window)
        out["gold_peak"] = peak["value"]
        out["gold_peak_step"] = peak["step"]
        ks, kl = series(rows, "step", "kl_to_ref")
        in_window = kl[(ks >= steps[peak["start"]]) & (ks <= steps[peak["stop"] - 1])]
        if in_window.size:
            out["kl_at_gold_peak"] = float(np.mean(in_window))
    # only what METRICS names (kl_initial, words_initial, ... are not part of the protocol)
    return {k: out[k] for k in METRICS if k in out}


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def eval_metrics(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """The checkpoint metrics of :data:`METRICS` from a run's ``metrics/eval/<run>.json``; missing keys are left
    out."""
    out: dict[str, float] = {}
    checkpoints = evaluation.get("checkpoints") or {}
    for c in CHECKPOINTS:
        ckpt = checkpoints.get(c) or {}
        gold = _number(ckpt.get("gold"))
        if gold is not None:
            out[f"gold@{c}"] = gold
        if c in WIN_RATE_CHECKPOINTS:
            for o in OPPONENTS:
                win = _number((ckpt.get(o) or {}).get("win_rate_ties_half"))
                if win is not None:
                    out[f"win_{o}@{c}"] = win
    return out


def run_metrics(
    rows: Sequence[Mapping[str, Any]], evaluation: Mapping[str, Any], window: int = SMOOTH_STEPS
) -> dict[str, float]:
    """Every metric of :data:`METRICS` one run has, in that order."""
    found = {**curve_metrics(rows, window), **eval_metrics(evaluation)}
    return {k: found[k] for k in METRICS if k in found}


def run_files(workdir: str | Path, run: str) -> tuple[Path, Path]:
    """``(per-step rows, evaluation)`` files of run ``<algo>-<method>`` in a seed's working directory."""
    wd = Path(workdir)
    return wd / "models" / "rl" / run / "metrics.jsonl", wd / "metrics" / "eval" / f"{run}.json"


def by_step(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The rows in step order, the last one of a step kept (a resumed run may have logged a step twice)."""
    last = {int(r["step"]): dict(r) for r in rows if _number(r.get("step")) is not None}
    return [last[s] for s in sorted(last)]


def reported_at(run: dict[str, Any], checkpoint: str) -> dict[str, Any]:
    """A run as a method that stops at ``checkpoint`` reports it (early stopping by the held-out RM): its final
    checkpoint is that one, and it has no training curve past it (the curve metrics are left out)."""
    ev = dict(run["evaluation"])
    ckpts = dict(ev.get("checkpoints") or {})
    if checkpoint not in ckpts:
        raise ResultsError(f"the run has no {checkpoint!r} checkpoint to report (evaluate wrote {sorted(ckpts)})")
    ckpts["final"] = ckpts[checkpoint]
    return {"rows": [], "evaluation": {**ev, "checkpoints": ckpts}}


def load_runs(
    seed_dirs: Mapping[int, str | Path], algos: Sequence[str], methods: Sequence[str]
) -> dict[tuple[int, str, str], dict[str, Any]]:
    """``{(seed, algo, method): {"rows": [...] (:func:`by_step`), "evaluation": {...}}}`` of every run; one
    :class:`ResultsError` naming every run whose files are missing."""
    runs, missing = {}, []
    for seed in sorted(seed_dirs):
        for algo in algos:
            for method in methods:
                m = METHOD_TABLE[method]
                rows_file, eval_file = run_files(seed_dirs[seed], f"{algo}-{m.run_of or method}")
                absent = [str(f) for f in (rows_file, eval_file) if not f.is_file()]
                if absent:
                    missing.append(f"seed {seed} {algo}-{method} (no {' and no '.join(absent)})")
                    continue
                run = {"rows": by_step(read_jsonl(rows_file)), "evaluation": read_json(eval_file)}
                runs[seed, algo, method] = reported_at(run, m.checkpoint) if m.checkpoint != "final" else run
    if missing:
        raise ResultsError(f"{len(missing)} run(s) missing: " + "; ".join(missing))
    return runs


# ---- curves over seeds --------------------------------------------------------------------------------------------


def _smoothed(rows: Sequence[Mapping[str, Any]], y_key: str, window: int) -> dict[int, tuple[float, float]]:
    """``{step: (sqrt KL, y)}`` at the steps that have ``kl_to_ref`` and ``y_key``, each smoothed by the centred
    ``window``-step moving average over its own steps (:func:`step_moving_average`: the KL exists on every
    ``rl.monitor_every``-th step only, the gold on all); a KL estimate below 0 counts as 0."""
    ks, kl = series(rows, "step", "kl_to_ref")
    ys, y = series(rows, "step", y_key)
    at = np.asarray(sorted(set(ks.tolist()) & set(ys.tolist())))
    if at.size == 0:
        return {}
    x = step_moving_average(ks, np.sqrt(np.maximum(kl, 0.0)), at, window)
    yy = step_moving_average(ys, y, at, window)
    return {int(a): (float(b), float(c)) for a, b, c in zip(at, x, yy, strict=True)}


def gold_at_sqrt_kl(rows: Sequence[Mapping[str, Any]], level: float, window: int = SMOOTH_STEPS) -> float | None:
    """The smoothed gold where the run's smoothed sqrt(KL) first reaches ``level`` (linear between the two measured
    steps around it; the first point's gold when it starts above), None when it never does."""
    pts = sorted(_smoothed(rows, "gold_score", window).items())
    prev = None
    for _, (x, y) in pts:
        if x >= level:
            if prev is None or x == prev[0]:
                return y
            return prev[1] + (y - prev[1]) * (level - prev[0]) / (x - prev[0])
        prev = (x, y)
    return None


def final_sqrt_kl(rows: Sequence[Mapping[str, Any]], window: int = SMOOTH_STEPS) -> float | None:
    """The run's smoothed sqrt(KL) at its last measured step (None without KL)."""
    pts = sorted(_smoothed(rows, "gold_score", window).items())
    return pts[-1][1][0] if pts else None


def matched_kl_levels(runs: Mapping[tuple[int, str, str], Mapping[str, Any]], window: int) -> dict[str, float]:
    """Per algorithm, the matched sqrt(KL) level: the lowest, over methods, of the mean final smoothed sqrt(KL)
    over seeds (every method reaches it on average, so gold can be compared at equal KL)."""
    finals: dict[tuple[str, str], list[float]] = {}
    for (_, algo, method), r in runs.items():
        f = final_sqrt_kl(r["rows"], window)
        if f is not None:
            finals.setdefault((algo, method), []).append(f)
    levels: dict[str, float] = {}
    for (algo, _), v in finals.items():
        levels[algo] = min(levels.get(algo, math.inf), float(np.mean(v)))
    return levels


def mean_curve(
    rows_by_seed: Sequence[Sequence[Mapping[str, Any]]], y_key: str, window: int = SMOOTH_STEPS
) -> dict[str, list]:
    """Mean over seeds, step by step (the steps every seed has), of each seed's smoothed sqrt(KL) and ``y_key``,
    with the 95% CI half-width of ``y_key`` over seeds (None for one seed): ``{"step", "sqrt_kl", "y",
    "half_width"}``, lists of equal length."""
    per_seed = [_smoothed(rows, y_key, window) for rows in rows_by_seed]
    common = sorted(set.intersection(*(set(p) for p in per_seed))) if per_seed else []
    out: dict[str, list] = {"step": common, "sqrt_kl": [], "y": [], "half_width": []}
    for s in common:
        xs, ys = zip(*(p[s] for p in per_seed), strict=True)
        out["sqrt_kl"].append(float(np.mean(xs)))
        out["y"].append(float(np.mean(ys)))
        out["half_width"].append(t_half_width(ys))
    return out


# ---- the aggregate ------------------------------------------------------------------------------------------------


def aggregate(
    runs: Mapping[tuple[int, str, str], Mapping[str, Any]],
    algos: Sequence[str],
    methods: Sequence[str],
    best_of_n: Mapping[str, Any] | None = None,
    window: int = SMOOTH_STEPS,
) -> dict[str, Any]:
    """The results document (``results.json``) of ``runs`` as :func:`load_runs` returns them.

    Keys: ``protocol`` (confidence, window, baseline, seeds, algos, methods, metric meanings), ``runs`` (every run's
    metrics), ``summary`` (per algo and method: mean, half_width, n of each metric), ``paired`` (per algo and
    non-baseline method: the difference to the baseline, paired by seed, with its CI, verdict and the per-seed
    differences), ``curves`` (the frontier's mean curves) and ``best_of_n`` (the best-of-n gold curve, or None).
    Only numbers and names: byte-identical for identical inputs.
    """
    seeds = sorted({s for s, _, _ in runs})
    metrics = {key: run_metrics(r["rows"], r["evaluation"], window) for key, r in runs.items()}
    levels = matched_kl_levels(runs, window) if len(methods) > 1 else {}
    for (s, a, m), r in runs.items():
        g = gold_at_sqrt_kl(r["rows"], levels[a], window) if a in levels else None
        if g is not None:  # in METRICS order
            merged = {**metrics[s, a, m], "gold_at_matched_kl": g}
            metrics[s, a, m] = {k: merged[k] for k in METRICS if k in merged}
    per_run = [
        {"seed": s, "algo": a, "method": m, "metrics": metrics[s, a, m]}
        for a in algos
        for m in methods
        for s in seeds
        if (s, a, m) in metrics
    ]

    def by_seed(algo: str, method: str, name: str) -> dict[int, float]:
        return {s: metrics[s, algo, method][name] for s in seeds if name in metrics.get((s, algo, method), {})}

    summary, paired, curves = [], [], []
    for algo in algos:
        for method in methods:
            cells = {}
            for name in METRICS:
                vals = by_seed(algo, method, name)
                if vals:
                    cells[name] = mean_ci(list(vals.values()))
            summary.append({"algo": algo, "method": method, "metrics": cells})
            seed_rows = [runs[s, algo, method]["rows"] for s in seeds if (s, algo, method) in runs]
            gold, proxy = mean_curve(seed_rows, "gold_score", window), mean_curve(seed_rows, "proxy_reward", window)
            curves.append({"algo": algo, "method": method, "n_seeds": len(seed_rows), "gold": gold, "proxy": proxy})
            if method == BASELINE or BASELINE not in methods:
                continue
            diffs = {}
            for name in METRICS:
                d = paired_differences(by_seed(algo, method, name), by_seed(algo, BASELINE, name))
                if d:
                    ci = mean_ci(list(d.values()))
                    diffs[name] = {
                        **ci,
                        "verdict": verdict(ci["mean"], ci["half_width"]),
                        "per_seed": [{"seed": s, "difference": v} for s, v in d.items()],
                    }
            paired.append({"algo": algo, "method": method, "baseline": BASELINE, "metrics": diffs})
    bon = None
    if best_of_n and best_of_n.get("curve"):
        bon = [
            {"sqrt_kl": float(r["sqrt_kl"]), "gold": float(r["gold"])}
            for r in best_of_n["curve"]
            if _number(r.get("sqrt_kl")) is not None and _number(r.get("gold")) is not None
        ]
    return {
        "protocol": {
            "confidence": CONFIDENCE,
            "smooth_steps": window,
            "baseline": BASELINE,
            "seeds": seeds,
            "algos": list(algos),
            "methods": list(methods),
            "matched_sqrt_kl": levels,
            "metrics": {k: v[1] for k, v in METRICS.items()},
        },
        "runs": per_run,
        "summary": summary,
        "paired": paired,
        "curves": curves,
        "best_of_n": bon,
    }


def write_results_json(results: Mapping[str, Any], path: str | Path) -> Path:
    """``results.json``: sorted keys, fixed indent, so equal results give equal bytes."""
    write_json(path, results)
    return Path(path)


# ---- markdown -----------------------------------------------------------------------------------------------------


def _fmt(name: str, value: float, signed: bool = False) -> str:
    return format(value, ("+" if signed else "") + METRICS[name][0])


def results_markdown(
    results: Mapping[str, Any], command: str, total_seconds: float | None = None, skipped: tuple[int, float] = (0, 0.0)
) -> str:
    """``results.md``: the command, the table of means +- 95% CI half-widths, the paired differences to the
    baseline with verdicts, the metrics' meanings, and (last) the command's wall time; ``skipped``: how many steps
    it skipped as done before, and their seconds when they ran."""
    proto = results["protocol"]
    names = [n for n in METRICS if any(n in row["metrics"] for row in results["summary"])]
    pct = f"{proto['confidence']:.0%}"
    lines = [
        f"Produced by: `{command}`",
        "",
        f"## Mean ± {pct} CI half-width over seeds (Student t, n - 1 dof)",
        "",
        f"Seeds: {', '.join(str(s) for s in proto['seeds'])}.",
        "",
        "| algo | method | n | " + " | ".join(names) + " |",
        "|" + "---|" * (len(names) + 3),
    ]
    for row in results["summary"]:
        cells = []
        for name in names:
            c = row["metrics"].get(name)
            if c is None:
                cells.append("-")
            else:
                hw = "n/a" if c["half_width"] is None else _fmt(name, c["half_width"])
                cells.append(f"{_fmt(name, c['mean'])} ± {hw}")
        n = max((c["n"] for c in row["metrics"].values()), default=0)
        lines.append(f"| {row['algo']} | {row['method']} | {n} | " + " | ".join(cells) + " |")
    lines += ["", f"## method - {proto['baseline']}, paired by seed", ""]
    if not results["paired"]:
        lines.append(f"(no paired differences: the methods do not include {proto['baseline']})")
    else:
        lines += [
            f"| algo | comparison | metric | difference | {pct} CI | verdict | n seeds |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in results["paired"]:
            for name in METRICS:
                d = row["metrics"].get(name)
                if d is None:
                    continue
                hw = d["half_width"]
                ci = (
                    "n/a" if hw is None else f"[{_fmt(name, d['mean'] - hw, True)}, {_fmt(name, d['mean'] + hw, True)}]"
                )
                lines.append(
                    f"| {row['algo']} | {row['method']} - {row['baseline']} | {name} | {_fmt(name, d['mean'], True)} "
                    f"| {ci} | {d['verdict']} | {d['n']} |"
                )
    lines += [
        "",
        f"Verdict: higher / lower when the {pct} CI of the paired difference excludes 0, tie when it contains it.",
        "",
        "Metrics:",
        "",
        *(f"- `{n}`: {proto['metrics'][n]}" for n in names),
    ]
    if total_seconds is not None:
        n, secs = skipped
        before = f"; it skipped {n} steps done before, which took {secs:.0f} s then" if n else ""
        lines += [
            "",
            f"Timing: {total_seconds:.0f} s wall clock for the whole command{before} (per step: timings.json).",
        ]
    return "\n".join(lines) + "\n"


# ---- the frontier plot --------------------------------------------------------------------------------------------


def _band(ax, curve: Mapping[str, list], colour: str) -> None:
    hw = curve["half_width"]
    if not curve["step"] or any(h is None for h in hw):
        return
    y = np.asarray(curve["y"])
    ax.fill_between(curve["sqrt_kl"], y - np.asarray(hw), y + np.asarray(hw), color=colour, alpha=0.2, linewidth=0)


OVERLAY_MAX = 4  # more curves than this on one axis are unreadable: the frontier becomes one panel per method


def plot_frontier(results: Mapping[str, Any], path: str | Path) -> Path:
    """Gold (left) and proxy (right) against sqrt(KL to the reference), one line per (algo, method): the mean over
    seeds of each seed's smoothed curve, with the 95% band over seeds; the best-of-n gold curve dashed, if any. With
    more than :data:`OVERLAY_MAX` curves, :func:`frontier_grid` instead (one gold panel per method)."""
    fig = frontier_figure(results)
    return save_figure(fig, path)


def frontier_figure(results: Mapping[str, Any]) -> Figure:
    """The figure :func:`plot_frontier` saves."""
    if len(results["curves"]) > OVERLAY_MAX:
        return frontier_grid(results)
    fig = Figure(figsize=(12.0, 4.6))
    ax_gold, ax_proxy = fig.subplots(1, 2)
    for i, c in enumerate(results["curves"]):
        colour, label = f"C{i % 10}", f"{c['algo']}-{c['method']} (n={c['n_seeds']})"
        for ax, curve in ((ax_gold, c["gold"]), (ax_proxy, c["proxy"])):
            if curve["step"]:
                ax.plot(curve["sqrt_kl"], curve["y"], color=colour, linewidth=1.8, label=label)
                _band(ax, curve, colour)
    bon = results.get("best_of_n")
    if bon:
        ax_gold.plot(
            [r["sqrt_kl"] for r in bon], [r["gold"] for r in bon], "k--", marker="o", markersize=3, label="best-of-n"
        )
    window = results["protocol"]["smooth_steps"]
    for ax, what in ((ax_gold, "gold score"), (ax_proxy, "proxy reward (frozen vanilla RM)")):
        ax.set_xlabel("sqrt(KL to reference)")
        ax.set_ylabel(what)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, f"no {what} data", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"Gold and proxy vs sqrt(KL): mean over seeds of {window}-step moving averages, 95% band")
    return fig


def frontier_grid(results: Mapping[str, Any], cols: int = 4) -> Figure:
    """Small multiples of gold vs sqrt(KL): one panel per (algo, method) other than the baseline, each with the
    baseline's curve (grey) and the best-of-n curve (dashed) behind it, on shared axes, so every method is read
    against the same two references. [panels = curves - baselines]"""
    baseline = results["protocol"].get("baseline", "vanilla")
    curves = [c for c in results["curves"] if c["gold"]["step"]]
    base = {c["algo"]: c for c in curves if c["method"] == baseline}
    others = [c for c in curves if c["method"] != baseline]
    rows = max(1, math.ceil(len(others) / cols))
    fig = Figure(figsize=(3.4 * cols, 2.9 * rows))
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    bon = results.get("best_of_n")
    for ax, c in zip(axes, others, strict=False):
        ref = base.get(c["algo"])
        if ref is not None:
            ax.plot(ref["gold"]["sqrt_kl"], ref["gold"]["y"], color="0.5", linewidth=1.4, label=baseline)
            _band(ax, ref["gold"], "0.5")
        if bon:
            ax.plot([r["sqrt_kl"] for r in bon], [r["gold"] for r in bon], "k--", linewidth=1, label="best-of-n")
        ax.plot(c["gold"]["sqrt_kl"], c["gold"]["y"], color="C3", linewidth=1.8, label=c["method"])
        _band(ax, c["gold"], "C3")
        ax.set_title(f"{c['algo']}-{c['method']} (n={c['n_seeds']})", fontsize="medium")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small", loc="lower left")
    for ax in axes[len(others) :]:
        ax.set_axis_off()
    for ax in axes[::cols]:
        ax.set_ylabel("gold score")
    for i, ax in enumerate(axes[: len(others)]):
        if i + cols >= len(others):  # the lowest panel of its column: the x axis is labelled there
            ax.set_xlabel("sqrt(KL to reference)")
            ax.tick_params(labelbottom=True)
    window = results["protocol"]["smooth_steps"]
    fig.suptitle(
        f"Gold vs sqrt(KL), each method against {baseline} (grey) and best-of-n (dashed): mean over seeds of "
        f"{window}-step moving averages, 95% band"
    )
    return fig


def write_results(
    seed_dirs: Mapping[int, str | Path],
    algos: Sequence[str],
    methods: Sequence[str],
    out: str | Path,
    best_of_n: str | Path | None = None,
) -> dict[str, Any]:
    """Load every run, aggregate, write ``<out>/results.json`` and ``<out>/frontier.png``; returns the results.
    ``best_of_n``: a ``metrics/best_of_n.json`` whose ``curve`` is drawn on the gold panel, if the file exists."""
    runs = load_runs(seed_dirs, algos, methods)
    bon = read_json(best_of_n) if best_of_n is not None and Path(best_of_n).is_file() else None
    results = aggregate(runs, algos, methods, best_of_n=bon)
    write_results_json(results, Path(out) / "results.json")
    plot_frontier(results, Path(out) / "frontier.png")
    return results
