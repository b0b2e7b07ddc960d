"""Stage ``report``: across all RL runs, the over-optimisation plots and a summary table.

Writes ``plots/proxy_vs_gold.png`` (proxy = the frozen vanilla RM's score, the same for every method),
``plots/gold_vs_kl.png``, ``plots/length.png``, ``metrics/summary.json`` and ``metrics/summary.md`` (the table the
README shows, with the best-of-n verdict, and a line on the hidden-state analysis when ``metrics/hidden_states.json``
exists).
"""

from __future__ import annotations

import math
from pathlib import Path

from r2m.config import Config
from r2m.data.io import read_json, write_json
from r2m.evaluation.plots import plot_gold_vs_kl, plot_length, plot_proxy_vs_gold
from r2m.evaluation.report import checkpoint_table, hidden_state_line, markdown_table, summary_header, summary_row
from r2m.paths import Paths
from r2m.rl.runner import load_rows


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
            {
                k: [{**r, "sqrt_kl": math.sqrt(max(0.0, r["kl_to_ref"]))} for r in v if "kl_to_ref" in r]
                for k, v in runs.items()
            },
            paths.plots / "gold_vs_kl.png",
        ),
        plot_length(runs, paths.plots / "length.png"),
    ]
    sft = read_json(paths.metrics / "sft.json")
    rm = read_json(paths.metrics / "reward_model.json")
    table = markdown_table(rows)
    bon_file = paths.metrics / "best_of_n.json"
    header = summary_header(cfg, rm, sft, read_json(bon_file) if bon_file.exists() else None)
    hs_file = paths.metrics / "hidden_states.json"
    hs_line = hidden_state_line(read_json(hs_file)) if hs_file.exists() else ""
    ckpt = checkpoint_table(rows)
    judges = ", ".join(sorted({r.get("judge", "gold") for r in rows}))  # who produced the win rates
    names = "gold judge" if judges == "gold" else f"judge {judges}"
    ckpt_md = f"\nCheckpoint choice (eval prompts, greedy; {names}, both orders):\n\n{ckpt}" if ckpt else ""
    (paths.metrics / "summary.md").write_text(header + hs_line + table + ckpt_md)
    summary = {"runs": rows, "rm_test_accuracy": rm["test_accuracy"], "sft_gold_mean": sft.get("gold_mean")}
    write_json(paths.metrics / "summary.json", summary)
    return {
        "metrics": {"rm_test_accuracy": rm["test_accuracy"]},
        "artifacts": [*plots, paths.metrics / "summary.md"],
        "table": table,
    }
