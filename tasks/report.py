"""Stage ``report``: across all RL runs, the over-optimisation plots and a summary table.

Writes ``plots/proxy_vs_gold.png``, ``plots/gold_vs_kl.png``, ``plots/length.png``, ``metrics/summary.json`` and
``metrics/summary.md`` (the table the README shows; plus a line on the hidden-state analysis when
``metrics/hidden_states.json`` exists).
"""

from __future__ import annotations

from pathlib import Path

from r2m.config import Config
from r2m.data.io import read_json, write_json
from r2m.evaluation.plots import plot_gold_vs_kl, plot_length, plot_proxy_vs_gold
from r2m.rl.runner import load_rows
from tasks.common import Paths, run_stage, stage_main

COLUMNS = [
    ("run", "run", None),
    ("win rate vs ref", "vs_reference.win_rate_ties_half", "{:.2f}"),
    ("95% CI", "vs_reference.ci", None),
    ("win rate vs SFT", "vs_sft.win_rate_ties_half", "{:.2f}"),
    ("RM acc (RM-test)", "rm_test.accuracy", "{:.3f}"),
    ("RM acc (policy pairs)", "rm_policy_pairs.accuracy", "{:.3f}"),
    ("proxy start -> end", "proxy", None),
    ("gold start -> peak -> end", "gold", None),
    ("KL end", "rl.kl_to_ref_final", "{:.1f}"),
    ("rep. trigrams end", "rl.repeated_trigrams_final", "{:.1f}"),
    ("words end", "rl.completion_words_final", "{:.1f}"),
    ("s/step", "rl.seconds_per_step", "{:.2f}"),
    ("peak RSS GB", "rl.peak_rss_gb", "{:.2f}"),
]


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def summary_row(run: str, rl: dict, ev: dict) -> dict:
    row = {"run": run, "rl": rl, **ev}
    vr = ev.get("vs_reference") or {}
    if vr.get("ci_low") is not None:
        row["vs_reference"] = {**vr, "ci": f"[{vr['ci_low']:.2f}, {vr['ci_high']:.2f}]"}
    if "proxy_reward_initial" in rl:
        row["proxy"] = f"{rl['proxy_reward_initial']:.2f} -> {rl['proxy_reward_final']:.2f}"
    if "gold_score_initial" in rl:
        row["gold"] = (
            f"{rl['gold_score_initial']:.2f} -> {rl['gold_peak_ma']:.2f} (step {rl['gold_peak_step']})"
            f" -> {rl['gold_score_final']:.2f}"
        )
    return row


def markdown_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(c for c, _, _ in COLUMNS) + " |"
    sep = "|" + "---|" * len(COLUMNS)
    lines = [head, sep]
    for r in rows:
        cells = []
        for _, key, fmt in COLUMNS:
            v = _get(r, key)
            cells.append("-" if v is None else (fmt.format(v) if fmt else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def hidden_state_line(hs: dict) -> str:
    """One summary line from ``metrics/hidden_states.json``: per policy, the within-vs-across cosine gap (with its
    permutation p-value) and the Spearman correlation of pair cosine with |reward difference| at the last analysed
    layer ("" if incomplete)."""
    layers, policies = hs.get("layers") or [], hs.get("policies") or {}
    if not layers or not policies:
        return ""
    last = str(layers[-1])
    parts = []
    for name in sorted(policies, key=lambda name: name != "sft"):  # the SFT policy first
        s = (policies[name].get("layers") or {}).get(last) or {}
        if all(isinstance(s.get(k), int | float) for k in ("gap", "pair_spearman")):
            p_value = f" (p {s['gap_p_value']:.3f})" if isinstance(s.get("gap_p_value"), int | float) else ""
            parts.append(f"{name} gap {s['gap']:+.3f}{p_value}, Spearman {s['pair_spearman']:+.2f}")
    if not parts:
        return ""
    return (
        f"Hidden states ({hs.get('n', '?')} RM-test pairs, layer {last}): within-minus-across-label cosine gap and "
        f"Spearman(pair cosine, |reward difference|): {'; '.join(parts)}.\n\n"
    )


def report(cfg: Config, workdir: str | Path = ".") -> dict:
    paths = Paths.of(cfg, workdir)
    runs, rows = {}, []
    for run in cfg.run_names():
        runs[run] = load_rows(paths.rl_run(run))
        rl = read_json(paths.metrics / "rl" / f"{run}.json")
        ev_file = paths.metrics / "eval" / f"{run}.json"
        rows.append(summary_row(run, rl, read_json(ev_file) if ev_file.exists() else {}))
    plots = [
        plot_proxy_vs_gold(runs, paths.plots / "proxy_vs_gold.png"),
        plot_gold_vs_kl(
            {k: [{**r, "kl": r.get("kl_to_ref")} for r in v] for k, v in runs.items()}, paths.plots / "gold_vs_kl.png"
        ),
        plot_length(runs, paths.plots / "length.png"),
    ]
    sft = read_json(paths.metrics / "sft.json")
    rm = read_json(paths.metrics / "reward_model.json")
    table = markdown_table(rows)
    header = (
        f"Profile `{cfg.profile}`, seed {cfg.seed}, {cfg.rl.steps} RL steps. Vanilla RM held-out accuracy "
        f"{rm['test_accuracy']:.3f} ({rm['n_train']} training pairs). SFT gold mean "
        f"{sft.get('gold_mean', float('nan')):.2f}.\n\n"
    )
    hs_file = paths.metrics / "hidden_states.json"
    hs_line = hidden_state_line(read_json(hs_file)) if hs_file.exists() else ""
    (paths.metrics / "summary.md").write_text(header + hs_line + table)
    summary = {"runs": rows, "rm_test_accuracy": rm["test_accuracy"], "sft_gold_mean": sft.get("gold_mean")}
    write_json(paths.metrics / "summary.json", summary)
    return {
        "metrics": {"rm_test_accuracy": rm["test_accuracy"]},
        "artifacts": [*plots, paths.metrics / "summary.md"],
        "table": table,
    }


def run(cfg: Config, workdir: str | Path = ".", pipeline_id: str | None = None, mlflow: bool = True) -> dict:
    return run_stage("report", report, cfg, workdir, pipeline_id, mlflow)


if __name__ == "__main__":
    stage_main("report", report, __doc__)
