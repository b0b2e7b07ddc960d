"""``r2m compare``: one method against every other method of a finished ``r2m results`` directory, paired by seed.

    r2m compare --results results/peers --method r2m [--metrics gold@final gold@best_heldout ...]

``r2m results`` pairs every method with vanilla; a reader choosing among peers wants the method of interest against
each of them. Per (algo, other method, metric): the mean of ``method - other`` over the seeds both have, its 95%
Student-t CI, the paired t-test's p-value and two verdicts: the per-comparison one (the CI) and one after Holm's
correction over every comparison in the table (10 other methods x the 7 default metrics make 70 tests: at 95% each,
about 3 or 4 "differences" would appear by chance alone). Writes ``compare-<method>.md`` and ``.json`` beside
``results.json`` and prints the markdown. Reads only ``results.json``: nothing reruns.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scipy import stats

from r2m.data.io import write_json
from r2m.evaluation.results import mean_ci, paired_differences, verdict

DEFAULT_METRICS = (
    "gold@final",
    "gold@best_heldout",
    "gold_peak",
    "gold_at_matched_kl",
    "kl_final",
    "words_final",
    "repeated_trigrams_final",
)


class CompareError(ValueError):
    """A results file or option that cannot be compared (one line, names the file or option)."""


def p_value(diffs: Sequence[float]) -> float | None:
    """Two-sided paired t-test p-value of ``diffs`` (mean 0 under the null); 1.0 when every difference is 0, None
    for fewer than two."""
    if len(diffs) < 2:
        return None
    if all(d == diffs[0] for d in diffs):
        return 1.0 if diffs[0] == 0 else 0.0
    return float(stats.ttest_1samp(list(diffs), 0.0).pvalue)


def holm(pvalues: Sequence[float | None], alpha: float) -> list[bool | None]:
    """Holm's step-down rejections at family-wise level ``alpha`` (None where a p-value is None)."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    out: list[bool | None] = [None if p is None else False for p in pvalues]
    m = len(order)
    for rank, (p, i) in enumerate(order):
        if p > alpha / (m - rank):
            break
        out[i] = True
    return out


def compare(results: Mapping[str, Any], method: str, metrics: Sequence[str]) -> dict[str, Any]:
    """The comparison of ``method`` with every other method of ``results`` (the dict of ``results.json``)."""
    proto = results["protocol"]
    if method not in proto["methods"]:
        raise CompareError(f"--method {method!r}: not in the results (methods: {', '.join(proto['methods'])})")
    values: dict[tuple[str, str, str], dict[int, float]] = {}
    for run in results["runs"]:
        for name, v in run["metrics"].items():
            values.setdefault((run["algo"], run["method"], name), {})[run["seed"]] = v
    rows = []
    for algo in proto["algos"]:
        for other in (m for m in proto["methods"] if m != method):
            for name in metrics:
                mine, theirs = values.get((algo, method, name)), values.get((algo, other, name))
                if not mine or not theirs:
                    continue
                diffs = paired_differences(mine, theirs)
                if not diffs:
                    continue
                ci = mean_ci(list(diffs.values()), proto["confidence"])
                rows.append(
                    {
                        "algo": algo,
                        "other": other,
                        "metric": name,
                        **ci,
                        "p": p_value(list(diffs.values())),
                        "verdict": verdict(ci["mean"], ci["half_width"]),
                        "per_seed": [{"seed": s, "difference": d} for s, d in diffs.items()],
                    }
                )
    alpha = 1 - proto["confidence"]
    for row, rejected in zip(rows, holm([r["p"] for r in rows], alpha), strict=True):
        row["verdict_holm"] = "n/a" if rejected is None else (row["verdict"] if rejected else "tie")
    return {"method": method, "confidence": proto["confidence"], "comparisons": len(rows), "rows": rows}


def markdown(comparison: Mapping[str, Any], command: str) -> str:
    """The comparison as one markdown table (a row per algo x other method x metric)."""
    m, conf = comparison["method"], comparison["confidence"]
    lines = [
        f"Produced by: `{command}`",
        "",
        f"{m} minus each other method, paired by seed: mean, {conf:.0%} Student-t CI, paired t-test p, the CI's verdict"
        f" and the verdict after Holm's correction over all {comparison['comparisons']} comparisons.",
        "",
        "| algo | comparison | metric | difference | CI | p | verdict | Holm | n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in comparison["rows"]:
        hw = r["half_width"]
        ci = "-" if hw is None else f"[{r['mean'] - hw:+.3f}, {r['mean'] + hw:+.3f}]"
        p = "-" if r["p"] is None else f"{r['p']:.3f}"
        lines.append(
            f"| {r['algo']} | {m} - {r['other']} | {r['metric']} | {r['mean']:+.3f} | {ci} | {p} | {r['verdict']} "
            f"| {r['verdict_holm']} | {r['n']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="r2m compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", required=True, type=Path, help="an `r2m results --out` directory")
    ap.add_argument("--method", required=True, help="the method compared with every other one (e.g. r2m)")
    ap.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), metavar="METRIC", help="results metrics")
    args = ap.parse_args(argv)
    path = args.results / "results.json"
    if not path.is_file():
        raise SystemExit(f"error: {path}: no results.json (run `r2m results --out {args.results}` first)")
    try:
        results = json.loads(path.read_text())
        known = set(results["protocol"]["metrics"]) | {"gold_at_matched_kl"}
        unknown = [x for x in args.metrics if x not in known]
        if unknown:
            raise CompareError(f"--metrics: unknown {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        out = compare(results, args.method, args.metrics)
    except (CompareError, KeyError, json.JSONDecodeError) as e:
        raise SystemExit(f"error: {path}: {e}") from None
    command = " ".join(
        ["r2m compare", "--results", str(args.results), "--method", args.method, "--metrics", *args.metrics]
    )
    text = markdown(out, command)
    write_json(args.results / f"compare-{args.method}.json", out)
    (args.results / f"compare-{args.method}.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
