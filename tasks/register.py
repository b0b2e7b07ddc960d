"""Stage ``register``: register the best run's policy and the reward model in the MLflow model registry.

Versions get the alias ``candidate``; ``r2m promote`` moves ``champion`` to a candidate that passes the gate.
"Best" = highest gold win rate vs the reference summaries (ties as half); every run's metrics are logged beside it.
Writes ``registry.json`` beside ``mlflow.db`` (names and versions): the registry's state, not a reproducible
output, so it is no DVC output (the stage's effect is the MLflow registry itself).
"""

from __future__ import annotations

from pathlib import Path

from r2m.config import Config
from r2m.data.io import read_json, write_json
from tasks.common import Paths

PROMOTION_METRIC = "win_rate_vs_reference"
REGISTRY_FILE = "registry.json"


def pick_best(paths: Paths, runs: list[str]) -> tuple[str, float | None]:
    """The run with the highest win rate vs the reference (the first run when no eval exists)."""
    scored = []
    for run in runs:
        f = paths.metrics / "eval" / f"{run}.json"
        wr = (read_json(f).get("vs_reference") or {}).get("win_rate_ties_half") if f.exists() else None
        scored.append((wr if wr is not None else float("-inf"), run))
    best_wr, best = max(scored, key=lambda t: t[0])
    return best, (None if best_wr == float("-inf") else best_wr)


def promote(cfg: Config, workdir: str | Path, model: str, metric: str, min_value: float | None = None) -> dict:
    """Move alias ``champion`` of ``<registry_prefix>-<model>`` to its ``candidate`` version if that passes the gate
    on ``metric`` (``r2m.tracking.promote``); returns the decision and its reason."""
    from r2m import tracking
    from tasks.common import configure_tracking

    configure_tracking(cfg, workdir)
    return tracking.promote(f"{cfg.mlflow.registry_prefix}-{model}", metric=metric, min_value=min_value)


def register(cfg: Config, workdir: str | Path = ".") -> dict:
    import mlflow

    from r2m import tracking

    paths = Paths.of(cfg, workdir)
    best, wr = pick_best(paths, cfg.run_names())
    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("register must run inside an MLflow stage run (tasks.common.run_stage with mlflow=True)")
    run_id = active.info.run_id
    prefix = cfg.mlflow.registry_prefix
    metrics = {PROMOTION_METRIC: wr} if wr is not None else {}
    policy_name, rm_name = f"{prefix}-policy", f"{prefix}-reward-model"
    pv = tracking.register_model_dir(
        paths.rl_run(best) / "final" / "policy",
        policy_name,
        run_id=run_id,
        kind="policy",
        description=f"{best} final policy",
        metrics=metrics,
        source_root=paths.root,
    )
    rv = tracking.register_model_dir(
        paths.rm,
        rm_name,
        run_id=run_id,
        kind="reward_model",
        description="vanilla Bradley-Terry reward model",
        source_root=paths.root,
    )
    head_runs = [r for r in cfg.run_names() if (paths.rl_run(r) / "final" / "reward_head").exists()]
    if head_runs:  # R2M: the cross-attention + score head of the best R2M-style run, loadable with its trunk + policy
        head_run, _ = pick_best(paths, head_runs)
        head_dir = paths.rl_run(head_run) / "final" / "reward_head"
        hv = tracking.register_model_dir(
            head_dir,
            f"{prefix}-reward-head",
            run_id=run_id,
            kind="reward_head",
            description=f"{head_run} R2M head",
            source_root=paths.root,
        )
    out = {
        "best_run": best,
        PROMOTION_METRIC: wr,
        "policy": {"name": policy_name, "version": pv},
        "reward_model": {"name": rm_name, "version": rv},
        "alias": "candidate",
    }
    if head_runs:
        out["reward_head"] = {"name": f"{prefix}-reward-head", "version": hv, "run": head_run}
    write_json(paths.root / REGISTRY_FILE, out)
    return {"metrics": {"policy_version": pv, "reward_model_version": rv}, "registered": out}
