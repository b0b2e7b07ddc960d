"""Stage ``rl@<algo>-<method>``: online RL (TRL GRPO / RLOO) from the SFT reference against the reward model.

Writes ``models/rl/<run>/`` (a checkpoint per round; a rerun resumes from the last finished round),
``metrics/rl/<run>.json`` (summary) and ``metrics/rl/<run>.csv`` (one row per step, for DVC plots).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from r2m.config import Config
from r2m.data.io import read_jsonl, write_json
from r2m.models.reward_model import RewardModel
from r2m.prompts import render_prompt
from r2m.rl.policy_pass import PolicyMonitor
from r2m.rl.reward import RewardFunction, VanillaScorer
from r2m.rl.runner import SUMMARY_KEYS, RunSpec, load_rows, summarise, train_rounds
from tasks.common import Paths, load_gold, run_stage, set_threads, stage_main

STEP_COLUMNS = ("step", *SUMMARY_KEYS, "gold_group_std", "loss", "grad_norm", "step_time_s", "rss_gb")


def files_digest(*dirs: Path) -> str:
    """Hash of the safetensors/json files of model dirs: the run's inputs, for the resume fingerprint."""
    h = hashlib.sha256()
    for d in dirs:
        for f in sorted(Path(d).rglob("*")):
            if f.suffix in {".safetensors", ".json"} and f.is_file():
                h.update(f.relative_to(d).as_posix().encode())
                h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def write_steps_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=STEP_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def build_scorer(method: str, rm: RewardModel, cfg: Config):
    if method == "vanilla":
        return VanillaScorer(rm, max_length=cfg.reward_model.max_length)
    raise NotImplementedError(f"rl method {method!r} is not implemented yet (issue 3); available: vanilla")


def build_run(cfg: Config, paths: Paths, algo: str, method: str) -> tuple[RunSpec, RewardFunction, object]:
    """Everything :func:`train_rounds` needs for one run: the spec (with its resume fingerprint), the reward
    callable (RM scorer + policy monitor + gold judge) and the tokenizer."""
    run = f"{algo}-{method}"
    prompts = read_jsonl(paths.data / "rl_prompts.jsonl", {"id": str, "prompt": str})
    tok = AutoTokenizer.from_pretrained(paths.sft)
    prompts = [{**r, "policy_prompt": render_prompt(tok, r["prompt"], cfg.policy)} for r in prompts]
    reference = AutoModelForCausalLM.from_pretrained(paths.sft, use_safetensors=True)
    rm = RewardModel.load(paths.rm)
    _, gold_fn = load_gold(paths)
    monitor = PolicyMonitor(tok, reference, keep_feedback=method != "vanilla")
    reward_fn = RewardFunction(build_scorer(method, rm, cfg), monitor, cfg.rl.num_generations, gold=gold_fn)
    d = cfg.to_dict()
    fingerprint = {
        "algo": algo,
        "method": method,
        "seed": cfg.seed,
        "rl": d["rl"],
        "r2m": d["r2m"],
        "inputs": files_digest(paths.sft, paths.rm),
        "n_prompts": len(prompts),
    }
    return RunSpec(algo, method, paths.rl_run(run), paths.sft, prompts, fingerprint), reward_fn, tok


def write_outputs(paths: Paths, run: str, status: dict) -> dict:
    """Summary JSON + per-step CSV from the run's metrics; returns the summary."""
    rows = load_rows(paths.rl_run(run))
    summary = {**summarise(rows), "resumed_from_step": status["resumed_from"]}
    write_json(paths.metrics / "rl" / f"{run}.json", summary)
    write_steps_csv(rows, paths.metrics / "rl" / f"{run}.csv")
    return summary


def rl(
    cfg: Config, workdir: str | Path = ".", algo: str = "grpo", method: str = "vanilla", progress: bool = True
) -> dict:
    set_threads(cfg)
    paths = Paths.of(cfg, workdir)
    spec, reward_fn, tok = build_run(cfg, paths, algo, method)
    status = train_rounds(spec, cfg, reward_fn, tok, progress=progress)
    summary = write_outputs(paths, f"{algo}-{method}", status)
    return {"run_dir": str(spec.run_dir), "metrics": summary, "step_metrics": [load_rows(spec.run_dir)]}


def run(
    cfg: Config,
    workdir: str | Path = ".",
    pipeline_id: str | None = None,
    mlflow: bool = True,
    algo: str = "grpo",
    method: str = "vanilla",
) -> dict:
    return run_stage("rl", rl, cfg, workdir, pipeline_id, mlflow, algo=algo, method=method)


if __name__ == "__main__":
    stage_main("rl", rl, __doc__, run_args=("algo", "method"))
