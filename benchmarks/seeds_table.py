"""Aggregate pipeline runs over seeds into the README's method table (mean over seeds, per-seed values beside).

    python benchmarks/seeds_table.py runs/seed0 runs/seed1

Reads ``metrics/summary.json`` and ``timings/rl-<run>.json`` of each working directory. The overhead ratios (R2M vs
vanilla, seconds and peak RSS per RL step) compare runs of the same pipeline invocation, i.e. measured side by side.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

FIELDS = [
    ("win rate vs ref", lambda r: r["vs_reference"]["win_rate_ties_half"]),
    ("win rate vs SFT", lambda r: r["vs_sft"]["win_rate_ties_half"]),
    ("RM acc RM-test (after RL)", lambda r: r["rm_test"]["accuracy"]),
    ("proxy final", lambda r: r["rl"]["proxy_reward_final"]),
    ("gold final", lambda r: r["rl"]["gold_score_final"]),
    ("gold peak (MA)", lambda r: r["rl"]["gold_peak_ma"]),
    ("KL final", lambda r: r["rl"]["kl_to_ref_final"]),
    ("rep. trigrams final", lambda r: r["rl"]["repeated_trigrams_final"]),
    ("s/step", lambda r: r["timings"]["seconds_per_step"]),
    ("peak RSS GB", lambda r: r["timings"]["peak_rss_gb"]),
]


def load(workdir: Path) -> dict[str, dict]:
    summary = json.loads((workdir / "metrics" / "summary.json").read_text())
    timings = lambda run: json.loads((workdir / "timings" / f"rl-{run}.json").read_text())  # noqa: E731
    return {r["run"]: {**r, "timings": timings(r["run"])} for r in summary["runs"]}


def main(dirs: list[str]) -> str:
    per_seed = [load(Path(d)) for d in dirs]
    runs = sorted({k for s in per_seed for k in s}, key=lambda n: (n.split("-")[0], n.split("-", 1)[1] != "vanilla"))
    head = "| run | " + " | ".join(name for name, _ in FIELDS) + " |"
    lines = [head, "|" + "---|" * (len(FIELDS) + 1)]
    for run in runs:
        cells = []
        for _, get in FIELDS:
            vals = [get(s[run]) for s in per_seed if run in s]
            cells.append(f"{statistics.mean(vals):.2f} ({', '.join(f'{v:.2f}' for v in vals)})")
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    lines.append("")
    for algo in sorted({r.split("-")[0] for r in runs}):
        van, r2m = f"{algo}-vanilla", f"{algo}-r2m"
        if all(van in s and r2m in s for s in per_seed):
            t = [s[r2m]["timings"]["seconds_per_step"] / s[van]["timings"]["seconds_per_step"] for s in per_seed]
            m = [s[r2m]["timings"]["peak_rss_gb"] / s[van]["timings"]["peak_rss_gb"] for s in per_seed]
            lines.append(
                f"- {algo}: R2M / vanilla seconds per step {statistics.mean(t):.3f}, "
                f"peak RSS {statistics.mean(m):.3f} (mean over {len(t)} seeds)"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
