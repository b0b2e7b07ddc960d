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


def headline(summary: dict) -> dict[str, float]:
    """The results a reader of the pipeline's parent MLflow run looks for first, per run: gold, proxy and KL at the
    end of training (``train_*``, RL prompts) and the peak of the gold moving average; gold of the final checkpoint
    and of those chosen by the held-out RM and by gold (the oracle) on the eval prompts; the final policy's win
    rates against SFT and the references; the reward model's accuracies."""
    out: dict[str, float] = {"rm_test_accuracy": summary["rm_test_accuracy"]}
    if summary.get("sft_gold_mean") is not None:
        out["sft_gold_mean"] = summary["sft_gold_mean"]
    for row in summary["runs"]:
        run, rl, ck = row["run"], row.get("rl") or {}, row.get("checkpoints") or {}
        picks = {
            "train_gold_final": rl.get("gold_score_final"),
            "train_proxy_final": rl.get("proxy_reward_final"),
            "train_kl_final": rl.get("kl_to_ref_final"),
            "train_gold_peak_ma": rl.get("gold_peak_ma"),
            "gold_final": (ck.get("final") or {}).get("gold"),
            "gold_best_heldout": (ck.get("best_heldout") or {}).get("gold"),
            "gold_oracle": (ck.get("oracle") or {}).get("gold"),
            "win_rate_vs_sft": (row.get("vs_sft") or {}).get("win_rate_ties_half"),
            "win_rate_vs_reference": (row.get("vs_reference") or {}).get("win_rate_ties_half"),
            "rm_accuracy_policy_pairs": (row.get("rm_policy_pairs") or {}).get("accuracy"),
        }
        out.update({f"{run}.{k}": float(v) for k, v in picks.items() if isinstance(v, int | float)})
    return out


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
        "headline": headline(summary),
        "artifacts": [*plots, paths.metrics / "summary.md"],
        "table": table,
    }
