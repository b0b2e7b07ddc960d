"""What R2M and our harness cost per RL step: R2M against vanilla, and our vanilla step against a plain TRL step.

    .venv/bin/python benchmarks/rl_cost.py [--profile tiny] [--algos grpo rloo] [--pairs 5] [--steps 16]
                                           [--workdir runs/bench] [--out benchmarks/results/rl_cost_<profile>.json]

The shared stages (prepare, sft, preferences, reward_model) run once for the profile; then, for each algorithm, each
of ``--pairs`` rounds runs three RL processes on the same data, seed and budget, in an order that rotates from round
to round: ``vanilla`` and ``r2m`` (this project's RL stage, monitor included) and ``trl`` (a plain TRL trainer built
from the same TRL config, whose only reward function is the vanilla RM's score). Each process times every optimiser
step (the first two are warm-up and dropped), splits it into its parts (generation, scoring, loss forward, backward
+ optimiser, the monitor's KL and held-out RM, R2M's update) and records its peak memory (resident set on the CPU,
``max_memory_allocated`` on a GPU) and the tokens it generated.

Printed and written to JSON: per kind the mean step seconds (the monitor runs on every ``rl.monitor_every``-th step,
so a run costs its mean step, not its median one), tokens per second and parts; per round the ratios r2m / vanilla
(per step, per generated token, peak memory) and vanilla / trl; their medians with min and max. ``--kinds`` drops
kinds from a round (``smol``: ``vanilla r2m``, as its TRL comparison is made on ``tiny``).
Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import spread, stage  # benchmarks/common.py (these scripts run as files: benchmarks/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("vanilla", "r2m", "trl")
WARMUP = 2


def child(kind: str, algo: str, profile: str, steps: int, out: Path) -> None:
    """One timed RL run in this process (``kind`` in KINDS); writes its measurements to ``out``."""
    import resource

    import torch
    from transformers import TrainerCallback

    import r2m.env  # noqa: F401  (pinned numerics, threads)
    from r2m.config import load_config
    from r2m.paths import Paths
    from r2m.rl import policy_pass, r2m, reward, runner

    cfg = load_config("params.yaml", profile=profile, overrides=[f"rl.steps={steps}", "rl.rounds=1"])
    torch.set_num_threads(cfg.threads)
    paths = Paths.of(cfg, ".")
    trainer_cls = runner.trainer_class(algo)
    parts: dict[str, float] = {}
    tokens = [0]

    def timed(name: str, fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    calc = trainer_cls._calculate_rewards

    def count_tokens(self, inputs, prompts, completions, completion_ids_list):
        tokens[0] += sum(len(c) for c in completion_ids_list)
        return calc(self, inputs, prompts, completions, completion_ids_list)

    trainer_cls._calculate_rewards = timed("scoring", count_tokens)
    trainer_cls._generate = timed("generation", trainer_cls._generate)
    trainer_cls.compute_loss = timed("loss_forward", trainer_cls.compute_loss)
    trainer_cls.training_step = timed("training_step", trainer_cls.training_step)
    trainer_cls._generate_and_score_completions = timed("rollout", trainer_cls._generate_and_score_completions)
    policy_pass.PolicyMonitor.kl = timed("monitor_kl", policy_pass.PolicyMonitor.kl)
    reward.FrozenRMs.__call__ = timed("monitor_frozen_rms", reward.FrozenRMs.__call__)
    r2m.R2MUpdater.update = timed("r2m_update", r2m.R2MUpdater.update)

    step_times: list[float] = []
    snapshots: list[dict[str, float]] = []

    class StepTimer(TrainerCallback):
        """Last callback: a step is timed from its begin to the end of every other callback (R2M's update)."""

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()
            self.before = {**parts, "tokens": tokens[0]}

        def on_step_end(self, args, state, control, **kw):
            step_times.append(time.perf_counter() - self.t0)
            now = {**parts, "tokens": tokens[0]}
            snapshots.append({k: v - self.before.get(k, 0.0) for k, v in now.items()})

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t_start = time.perf_counter()
    if kind in ("vanilla", "r2m"):
        from r2m.rl.assembly import build_run

        spec, reward_fn, tok = build_run(cfg, paths, algo, kind)
        spec.extra_export = None
        spec.callbacks.append(StepTimer())
        runner.train_rounds(spec, cfg, reward_fn, tok, progress=False)
    else:
        from datasets import Dataset
        from transformers import AutoTokenizer

        from r2m.data.io import read_jsonl
        from r2m.models.reward_model import RewardModel
        from r2m.prompts import render_prompt

        tok = AutoTokenizer.from_pretrained(paths.sft)
        rm = RewardModel.load(paths.rm).eval().requires_grad_(False)
        rows = read_jsonl(paths.data / "rl_prompts.jsonl", {"id": str, "prompt": str})
        data = Dataset.from_list(
            [{"prompt": render_prompt(tok, r["prompt"], cfg.policy), "rm_prompt": r["prompt"]} for r in rows]
        )

        def vanilla_rm(prompts, completions, rm_prompt, **kw):
            texts = [p + c for p, c in zip(rm_prompt, completions, strict=True)]
            return rm.score_texts(texts, max_length=cfg.reward_model.max_length).tolist()

        out_dir = paths.models / "rl" / f"{algo}-trl"
        shutil.rmtree(out_dir, ignore_errors=True)
        trainer = trainer_cls(
            model=str(paths.sft),
            reward_funcs=[vanilla_rm],
            args=runner.trl_config(algo, cfg, out_dir),
            train_dataset=data,
            processing_class=tok,
            callbacks=[StepTimer()],
        )
        trainer.train()
    total = time.perf_counter() - t_start
    kept = snapshots[WARMUP:]
    mean_parts = {k: statistics.fmean(s.get(k, 0.0) for s in kept) for k in snapshots[-1]}
    if torch.cuda.is_available():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write_text(
        json.dumps(
            {
                "kind": kind,
                "algo": algo,
                "step_s_median": statistics.median(step_times[WARMUP:]),
                "step_s_mean": statistics.fmean(step_times[WARMUP:]),
                "tokens_per_step": mean_parts.pop("tokens"),
                "parts_s": mean_parts,
                "peak_mb": peak_mb,
                "process_s": total,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--algos", nargs="+", default=["grpo", "rloo"])
    ap.add_argument("--pairs", type=int, default=5, help="rounds of (vanilla, r2m, trl), order rotating")
    ap.add_argument(
        "--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="the runs of a round (vanilla is required)"
    )
    ap.add_argument("--steps", type=int, default=16, help="RL steps per run (the first 2 are warm-up)")
    ap.add_argument("--workdir", default="runs/bench")
    ap.add_argument("--out", default=None, help="JSON results (default benchmarks/results/rl_cost_<profile>.json)")
    ap.add_argument("--reuse", action="store_true", help="keep the workdir's data and models if they are there")
    ap.add_argument("--setup-only", action="store_true", help="make the workdir's data and models, time nothing")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "ALGO", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1], a.profile, a.steps, Path(a.child[2]))
        return
    if "vanilla" not in a.kinds:
        ap.error("--kinds must include vanilla (every ratio is against it)")
    kinds = tuple(k for k in KINDS if k in a.kinds)
    if a.steps <= WARMUP:
        ap.error(f"--steps must be > {WARMUP} (the first {WARMUP} steps are warm-up)")
    wd = (ROOT / a.workdir / a.profile).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "params.yaml", wd / "params.yaml")
    shutil.copytree(ROOT / "configs", wd / "configs", dirs_exist_ok=True)
    if a.reuse and (wd / "models" / "rm_heldout").exists():
        print(f"[setup] reusing the data and models in {wd}", flush=True)
    else:
        for s in ("prepare", "sft", "preferences", "reward_model"):
            print(f"[setup] {s}", flush=True)
            stage(wd, [s, "--profile", a.profile])
    if a.setup_only:
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "runs": []}
    for algo in a.algos:
        for i in range(a.pairs):
            order = kinds[i % len(kinds) :] + kinds[: i % len(kinds)]
            row = {}
            for kind in order:
                shutil.rmtree(wd / "models" / "rl" / f"{algo}-{kind}", ignore_errors=True)
                out = wd / f"bench-{algo}-{kind}.json"
                cmd = [sys.executable, __file__, "--profile", a.profile, "--steps", str(a.steps)]
                subprocess.run(
                    [*cmd, "--child", kind, algo, str(out)],
                    cwd=wd,
                    env=env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                row[kind] = json.loads(out.read_text())
                print(f"{algo} round {i + 1} {kind}: {row[kind]['step_s_mean']:.3f} s/step (mean)", flush=True)
            results["runs"].append({"algo": algo, "round": i, "order": list(order), **row})
    summary = {}
    for algo in a.algos:
        runs = [r for r in results["runs"] if r["algo"] == algo]

        def ratios(num: str, den: str, key, runs=runs) -> dict | None:
            return spread([key(r[num]) / key(r[den]) for r in runs]) if num in kinds and den in kinds else None

        # the mean step, not the median: the monitor runs on every rl.monitor_every-th step only, and a run costs
        # its mean step (the median step would be one the monitor skipped)
        summary[algo] = {
            "r2m_vs_vanilla_step": ratios("r2m", "vanilla", lambda x: x["step_s_mean"]),
            "r2m_vs_vanilla_per_token": ratios("r2m", "vanilla", lambda x: x["step_s_mean"] / x["tokens_per_step"]),
            "r2m_vs_vanilla_peak_memory": ratios("r2m", "vanilla", lambda x: x["peak_mb"]),
            "vanilla_vs_trl_step": ratios("vanilla", "trl", lambda x: x["step_s_mean"]),
            "vanilla_vs_trl_per_token": ratios("vanilla", "trl", lambda x: x["step_s_mean"] / x["tokens_per_step"]),
            # timed inside the vanilla run itself, so free of the drift between processes: the per-step monitor
            # (KL to the reference and the held-out RM) as a fraction of the step
            "vanilla_monitor_fraction": spread(
                [
                    (
                        r["vanilla"]["parts_s"].get("monitor_kl", 0.0)
                        + r["vanilla"]["parts_s"].get("monitor_frozen_rms", 0.0)
                    )
                    / r["vanilla"]["parts_s"]["training_step"]
                    for r in runs
                ]
            ),
            "kinds": {
                k: {
                    "step_s": statistics.median(r[k]["step_s_mean"] for r in runs),
                    "tokens_per_s": statistics.median(r[k]["tokens_per_step"] / r[k]["step_s_mean"] for r in runs),
                    "peak_mb": statistics.median(r[k]["peak_mb"] for r in runs),
                    "parts_s": {
                        p: statistics.median(r[k]["parts_s"].get(p, 0.0) for r in runs) for p in runs[0][k]["parts_s"]
                    },
                }
                for k in kinds
            },
        }
    results["summary"] = summary
    results["command"] = " ".join(["python benchmarks/rl_cost.py", *sys.argv[1:]])
    out = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / f"rl_cost_{a.profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(summary))
    print(f"written: {out}")


def table(summary: dict) -> str:
    """Markdown table of the ratios (median, min-max over rounds)."""

    def fmt(s: dict | None) -> str:
        return "-" if s is None else f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})"

    lines = [
        "| algo | R2M / vanilla per step | per token | peak memory | vanilla / plain TRL per step | per token "
        "| monitor / vanilla step |",
        "|---|---|---|---|---|---|---|",
    ]
    for algo, s in summary.items():
        lines.append(
            f"| {algo} | {fmt(s['r2m_vs_vanilla_step'])} | {fmt(s['r2m_vs_vanilla_per_token'])} | "
            f"{fmt(s['r2m_vs_vanilla_peak_memory'])} | {fmt(s['vanilla_vs_trl_step'])} | "
            f"{fmt(s['vanilla_vs_trl_per_token'])} | {fmt(s['vanilla_monitor_fraction'])} |"
        )
    lines += [
        "",
        "| algo | kind | s/step | tokens/s | generation | scoring | of it: monitor KL | of it: held-out RM "
        "| loss forward "
        "| backward + optimiser + callbacks | R2M update |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for algo, s in summary.items():
        for kind, k in s["kinds"].items():
            p = k["parts_s"]
            rest = p.get("training_step", 0.0) - p.get("rollout", 0.0) - p.get("loss_forward", 0.0)
            cells = [p.get(x, 0.0) for x in ("generation", "scoring", "monitor_kl", "monitor_frozen_rms")]
            cells += [p.get("loss_forward", 0.0), rest, p.get("r2m_update", 0.0)]
            lines.append(
                f"| {algo} | {kind} | {k['step_s']:.3f} | {k['tokens_per_s']:.0f} | "
                + " | ".join(f"{c:.3f}" for c in cells)
                + " |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
