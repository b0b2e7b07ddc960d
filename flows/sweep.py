"""``r2m sweep``: one method's parameter swept over values, on top of a finished ``r2m results`` directory.

    r2m sweep --results results --param r2m.rm_lr --values 1e-6 1e-5 1e-3 --method r2m --out sweeps

Only the swept method's rl and evaluate stages run again (each in its own process, ``--set <param>=<value>`` on top
of the options the results directory was made with); the upstream stages (``base/``) and the vanilla runs of every
seed are linked from the results directory, so every value is compared with the same vanilla run of the same seed.
A value equal to the configured one links the results directory's own run of the method instead of rerunning it
(when the results directory ran that method: an ablation such as ``--method r2m_once`` runs at that value too).

What goes under ``--out``:

- ``<param>=<value>/``: an ``r2m results``-style directory per value (``seed_<s>/``, ``logs/``, ``results.json``,
  ``frontier.png``): the method against vanilla at that value;
- ``sweep-<param>.json`` and ``sweep-<param>.md`` (``sweep-<method>-<param>.*`` for a method other than r2m): per
  algo and value, the method - vanilla paired differences (mean, 95% CI, verdict; a CI containing 0 is a tie) and the
  method's reward-model accuracy on the RM-test pairs after the last round, its change from the vanilla RM's, and the
  cross-attention's part of the reward on its own (accuracy, norm), each with its 95% CI over seeds.

Steps that finished are skipped on a rerun (their options are checked), as in ``r2m results``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from flows.results import REPO, Step, link, link_upstream, prepare_out, run_step, stage_command
from r2m.config import ALGOS, METHODS, ConfigError, load_config
from r2m.data.io import read_json, write_json
from r2m.evaluation.results import METRICS, ResultsError, mean_ci, verdict, write_results

# the paired differences (method - vanilla) the sweep table shows
SWEEP_METRICS = ("gold_peak", "gold_final", "gold@best_heldout", "win_vs_sft@final", "kl_final")
# per-run summaries (metrics/rl/<run>.json) -> the last round's value, as the sweep table's columns
ROUND_KEYS = {
    "rm_acc": "rm_test_accuracy_per_round",
    "attention_only_acc": "attention_only_accuracy_per_round",
    "attention_norm": "attention_norm_per_round",
}


def source_options(results_dir: Path) -> dict:
    """The options (profile, overrides, upstream) the results directory's upstream stages were run with."""
    marker = results_dir / "base" / ".done" / "prepare"
    if not marker.is_file():
        raise ResultsError(f"{results_dir}: no finished `r2m results` run with shared upstream ({marker} missing)")
    return read_json(marker)["options"]


def link_run(src_seed: Path, workdir: Path, run: str) -> None:
    """Link a finished run (its model directory, evaluation and summaries) from a results seed directory."""
    for rel in (f"models/rl/{run}", f"metrics/eval/{run}.json", f"metrics/rl/{run}.json"):
        link(src_seed / rel, workdir / rel)


def sweep_stem(method: str, param: str) -> str:
    """File name (no suffix) of a sweep's table: ``sweep-<param>`` for R2M, ``sweep-<method>-<param>`` otherwise."""
    return f"sweep-{param}" if method == "r2m" else f"sweep-{method}-{param}"


def value_label(param: str, value: str) -> str:
    return f"{param}={value}"


def last_round(summary_file: Path) -> dict[str, float]:
    """The last round's RM-test accuracy (and the cross-attention's part alone) of one run's summary."""
    summary = read_json(summary_file) if summary_file.is_file() else {}
    return {name: summary[key][-1] for name, key in ROUND_KEYS.items() if summary.get(key)}


def sweep_rows(
    value_dirs: dict[str, Path], docs: dict[str, dict], seeds: Sequence[int], algos: Sequence[str], method: str
) -> list[dict]:
    """One row per (algo, value): paired differences and the reward-model accuracy columns, with CIs."""
    rows = []
    for algo in algos:
        run = f"{algo}-{method}"
        for value, vdir in value_dirs.items():
            paired = next(p for p in docs[value]["paired"] if p["algo"] == algo and p["method"] == method)
            row: dict = {"algo": algo, "value": value, "paired": {}}
            for name in SWEEP_METRICS:
                if (c := paired["metrics"].get(name)) is not None:
                    row["paired"][name] = {k: c[k] for k in ("mean", "half_width", "n", "verdict")}
            per_seed = [last_round(vdir / f"seed_{s}" / "metrics" / "rl" / f"{run}.json") for s in seeds]
            vanilla_acc = read_json(vdir / f"seed_{seeds[0]}" / "metrics" / "reward_model.json")["test_accuracy"]
            for name in ROUND_KEYS:
                vals = [r[name] for r in per_seed if name in r]
                if len(vals) == len(seeds):
                    row[name] = mean_ci(vals)
            if "rm_acc" in row:
                rise = mean_ci([r["rm_acc"] - vanilla_acc for r in per_seed])
                row["rm_acc_change"] = {**rise, "verdict": verdict(rise["mean"], rise["half_width"])}
            row["vanilla_rm_acc"] = vanilla_acc
            rows.append(row)
    return rows


def _ci(c: dict | None, fmt: str, signed: bool = False) -> str:
    if c is None:
        return "-"
    hw = "n/a" if c["half_width"] is None else format(c["half_width"], fmt)
    return f"{format(c['mean'], ('+' if signed else '') + fmt)} ± {hw}"


def sweep_markdown(doc: dict, command: str, seconds: float) -> str:
    """``sweep-<param>.md``: the table, what each column means, the command and its wall time."""
    p, m = doc["param"], doc["method"]
    head = ["algo", p, *(f"{n} ({m} - vanilla)" for n in SWEEP_METRICS)]
    head += ["RM acc after last round", "change from vanilla RM", "CA part alone: acc", "CA part norm"]
    lines = [
        f"Produced by: `{command}`",
        "",
        f"{m} at each value of `{p}` against vanilla (same seeds {', '.join(map(str, doc['seeds']))}, same "
        "upstream); mean ± 95% CI half-width over seeds (Student t). A paired difference whose CI contains 0 is a "
        "tie.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in doc["rows"]:
        cells = [row["algo"], row["value"] + (" (configured)" if row["value"] == doc["configured"] else "")]
        for name in SWEEP_METRICS:
            c = row["paired"].get(name)
            cells.append("-" if c is None else f"{_ci(c, METRICS[name][0], signed=True)} ({c['verdict']})")
        change = row.get("rm_acc_change")
        cells += [
            _ci(row.get("rm_acc"), ".3f"),
            "-" if change is None else f"{_ci(change, '.3f', signed=True)} ({change['verdict']})",
            _ci(row.get("attention_only_acc"), ".3f"),
            _ci(row.get("attention_norm"), ".3f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "RM acc: strict accuracy of the method's reward (policy feedback of the last round's policy, omega at its "
        "floor) on all RM-test pairs; change: minus the vanilla RM's accuracy on the same pairs "
        f"({doc['rows'][0]['vanilla_rm_acc']:.3f}). CA part alone: the cross-attention's share of the reward, "
        "(1 - omega) w . CA(H, h), ranking the same pairs on its own; norm: mean |(1 - omega) CA(H, h)|.",
        "",
        f"Wall time: {seconds:.0f} s (timings apart from these numbers: `timings.json` of each value's directory).",
    ]
    return "\n".join(lines) + "\n"


def sweep(
    results_dir: str | Path,
    param: str,
    values: Sequence[str],
    method: str,
    algos: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    params: str | Path = REPO / "params.yaml",
    command: str = "r2m sweep",
    echo: Callable[[str], None] = print,
) -> dict:
    """Run the sweep (skipping finished steps), write the per-value results and the sweep table; returns it."""
    t0 = time.perf_counter()
    if method == "vanilla":
        raise ResultsError("--method vanilla: vanilla is the baseline every value is compared with")
    if not values or len(set(values)) != len(values):
        raise ResultsError(f"--values: need distinct values, got {list(values)}")
    results_dir, out, params = Path(results_dir).resolve(), Path(out).resolve(), Path(params).resolve()
    opts = source_options(results_dir)
    if opts["upstream"] != "shared":
        raise ResultsError(f"{results_dir}: made with --upstream {opts['upstream']}; the sweep needs shared upstream")
    profile, overrides = opts["profile"], list(opts["overrides"])
    try:
        base_cfg = load_config(params, profile=profile, overrides=overrides).to_dict()
        cfgs = {v: load_config(params, profile=profile, overrides=[*overrides, f"{param}={v}"]) for v in values}
    except ConfigError as e:
        raise ResultsError(f"--param {param}: {e}") from None
    section, _, key = param.partition(".")
    configured = next((v for v, c in cfgs.items() if c.to_dict() == base_cfg), None)
    prepare_out(out, fresh=False)
    base = results_dir / "base"
    value_dirs, docs = {}, {}
    for v in values:
        steps_done = []
        vdir = out / value_label(param, v)
        prepare_out(vdir, fresh=False)
        value_dirs[v] = vdir
        for seed in seeds:
            wd = vdir / f"seed_{seed}"
            src = results_dir / f"seed_{seed}"
            link_upstream(base, wd, ["vanilla", method])
            link(base / "metrics" / "reward_model.json", wd / "metrics" / "reward_model.json")
            for algo in algos:
                link_run(src, wd, f"{algo}-vanilla")
                run = f"{algo}-{method}"
                if v == configured and (src / "models" / "rl" / run).exists():  # the results dir ran it already
                    link_run(src, wd, run)
                    continue
                for stage in ("rl", "evaluate"):
                    step = Step(stage, seed, wd, run)
                    sets = [*overrides, f"{param}={v}"]
                    options = {"seed": seed, "profile": profile, "overrides": sets, "upstream": "shared"}
                    cmd = stage_command(step, params, profile, sets)
                    row = run_step(step, cmd, options, vdir / "logs" / step.log_name, base)
                    steps_done.append(row)
                    took = "done before" if row["skipped"] else f"{row['seconds']:.0f} s"
                    echo(f"{value_label(param, v)} seed {seed} {stage} {run}  {took}")
        seed_dirs = {s: vdir / f"seed_{s}" for s in seeds}
        bon = base / "metrics" / "best_of_n.json"
        docs[v] = write_results(seed_dirs, algos, ["vanilla", method], vdir, best_of_n=bon)
        write_json(vdir / "timings.json", {"steps": steps_done})
    doc = {
        "param": param,
        "section": section,
        "key": key,
        "values": list(values),
        "configured": configured,
        "method": method,
        "seeds": list(seeds),
        "algos": list(algos),
        "source": {"results": os.path.relpath(results_dir, out), **opts},
        "rows": sweep_rows(value_dirs, docs, seeds, algos, method),
    }
    stem = sweep_stem(method, param)
    write_json(out / f"{stem}.json", doc)
    seconds = time.perf_counter() - t0
    (out / f"{stem}.md").write_text(sweep_markdown(doc, command, seconds))
    echo(f"wrote {out / stem}.md and {stem}.json ({seconds:.0f} s)")
    return doc


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="r2m sweep",
        description="Sweep one parameter of a method over values on top of a finished `r2m results` directory "
        "(shared upstream and vanilla runs linked, only the method reruns), with paired differences to vanilla "
        "and the method's RM accuracy, 95% CIs over seeds.",
    )
    ap.add_argument("--results", required=True, help="a finished `r2m results` directory (shared upstream)")
    ap.add_argument("--param", required=True, help="the parameter, e.g. r2m.rm_lr or r2m.omega_floor")
    ap.add_argument("--values", nargs="+", required=True, metavar="VALUE", help="its values, e.g. 1e-6 1e-5 1e-3")
    ap.add_argument("--method", default="r2m", choices=[m for m in METHODS if m != "vanilla"], help="default: r2m")
    ap.add_argument("--algos", nargs="+", default=["grpo"], choices=ALGOS, metavar="ALGO", help="default: grpo")
    ap.add_argument("--seeds", nargs="+", type=int, required=True, metavar="SEED", help="seeds of the results dir")
    ap.add_argument("--out", required=True, help="output directory (<param>=<value>/, sweep-<param>.md/.json)")
    ap.add_argument("--params", default=str(REPO / "params.yaml"), help="params file (default: the repo's)")
    return ap


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parser().parse_args(argv)
    try:
        sweep(
            a.results,
            a.param,
            a.values,
            a.method,
            a.algos,
            a.seeds,
            a.out,
            params=a.params,
            command=shlex.join(["r2m", "sweep", *argv]),
        )
    except ResultsError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
