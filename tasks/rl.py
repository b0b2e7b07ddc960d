"""Stage ``rl@<algo>-<method>``: online RL (TRL GRPO / RLOO) from the SFT reference against the reward model.

Writes ``models/rl/<run>/`` (a checkpoint per round; a rerun resumes from the last finished round),
``metrics/rl/<run>.json`` (summary) and ``metrics/rl/<run>.csv`` (one row per step, for DVC plots).
"""

from __future__ import annotations

import csv
from pathlib import Path

from r2m.config import Config
from r2m.data.io import read_json, write_json
from r2m.distributed import is_main_process
from r2m.paths import Paths
from r2m.rl.assembly import build_run
from r2m.rl.callbacks import read_rows
from r2m.rl.runner import SUMMARY_KEYS, load_rows, summarise, summarise_timings, train_rounds

STEP_COLUMNS = ("step", *SUMMARY_KEYS, "gold_group_std", "loss", "grad_norm")


def write_steps_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=STEP_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


# per-round summary lists -> the MLflow metric each becomes (one value per round, at the round's last step)
ROUND_METRICS = (
    ("rm_test_accuracy_per_round", "r2m_rm_test_accuracy"),
    ("attention_only_accuracy_per_round", "r2m_attention_only_accuracy"),
    ("attention_norm_per_round", "r2m_attention_norm_rm_test"),
)


def write_outputs(paths: Paths, run: str, write: bool = True, extra: dict | None = None) -> dict:
    """Summary JSON + per-step CSV from the run's metrics (``write``: False on the ranks of a launch that are not
    the main process, which read them only), with ``extra`` (e.g. ``prompts_truncated``); returns the summary."""
    rows = load_rows(paths.rl_run(run))
    summary = {**summarise(rows), **(extra or {})}
    rounds = sorted(paths.rl_run(run).glob("round_*/rm_accuracy.json"), key=lambda p: int(p.parent.name[6:]))
    if rounds:
        accs = [read_json(p) for p in rounds]
        summary["rm_test_accuracy_per_round"] = [a["accuracy"] for a in accs]
        if all("attention_only" in a for a in accs):  # heads with cross-attention: its part of the reward alone
            summary["attention_only_accuracy_per_round"] = [a["attention_only"]["accuracy"] for a in accs]
            summary["attention_norm_per_round"] = [a["attention_norm"] for a in accs]
    if write:
        write_json(paths.metrics / "rl" / f"{run}.json", summary)
        write_steps_csv(rows, paths.metrics / "rl" / f"{run}.csv")
    return summary


def rl(
    cfg: Config, workdir: str | Path = ".", algo: str = "grpo", method: str = "vanilla", progress: bool = True
) -> dict:
    paths = Paths.of(cfg, workdir)
    spec, reward_fn, tok = build_run(cfg, paths, algo, method)
    status = train_rounds(spec, cfg, reward_fn, tok, progress=progress)
    extra = {"prompts_truncated": spec.prompts_truncated}
    summary = write_outputs(paths, f"{algo}-{method}", write=is_main_process(), extra=extra)
    steps_per_round = cfg.rl.steps // cfg.rl.rounds
    round_rows = [
        {"step": (k + 1) * steps_per_round, **{name: summary[key][k] for key, name in ROUND_METRICS if key in summary}}
        for k in range(len(summary.get("rm_test_accuracy_per_round", [])))
    ]
    timings = {**summarise_timings(read_rows(spec.timings)), "resumed_from_step": status["resumed_from"]}
    return {
        "run_dir": str(spec.run_dir),
        "metrics": summary,
        "step_metrics": [load_rows(spec.run_dir), round_rows, read_rows(spec.timings)],
        "timings": timings,
    }
