"""Stage ``register``: register the best run's policy, the reward model and the best R2M head in the MLflow
model registry, each with the evidence its promotion gate reads (:mod:`r2m.promotion`, ``r2m.gate.*`` tags).

Versions get the alias ``candidate``; ``r2m promote`` moves ``champion`` to a candidate that passes its gate
(:func:`promote`; ``--rollback`` moves it back). "Best" = highest judge win rate vs the reference summaries (ties as
half). Writes ``registry.json`` beside ``mlflow.db`` (names and versions): the registry's state, not a
reproducible output, so it is no DVC output (the stage's effect is the MLflow registry itself).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from r2m.config import Config
from r2m.data.io import read_json, write_json
from r2m.paths import relative_posix
from r2m.promotion import Evidence, decide
from tasks.caching import path_digest
from tasks.common import REGISTRY_FILE, Paths

PROMOTION_METRIC = "win_rate_vs_reference"
MODELS = {"policy": "policy", "reward-model": "reward_model", "reward-head": "reward_head"}  # name suffix -> kind


def pick_best(paths: Paths, runs: list[str]) -> tuple[str, float | None]:
    """The run with the highest win rate vs the reference (the first run when no eval exists)."""
    scored = []
    for run in runs:
        f = paths.metrics / "eval" / f"{run}.json"
        wr = (read_json(f).get("vs_reference") or {}).get("win_rate_ties_half") if f.exists() else None
        scored.append((wr if wr is not None else float("-inf"), run))
    best_wr, best = max(scored, key=lambda t: t[0])
    return best, (None if best_wr == float("-inf") else best_wr)


def _eval_set(path: Path, judge: str = "") -> str:
    """Fingerprint of a held-out file (and the judge that labelled it): evidence is comparable only when equal."""
    return f"{path.name}:{path_digest(path)[:16]}" + (f":{judge}" if judge else "")


def policy_evidence(paths: Paths, run: str) -> Evidence | None:
    """The judge's verdicts of ``run``'s final policy vs the reference summaries on the held-out eval prompts."""
    f = paths.metrics / "eval" / f"{run}.json"
    rep = read_json(f) if f.exists() else {}
    vs = rep.get("vs_reference") or {}
    if not vs.get("n_valid"):
        return None
    judge = rep.get("judge", "gold")
    return Evidence(
        "policy",
        _eval_set(paths.data / "eval_prompts.jsonl", judge),
        wins=vs["wins"],
        ties=vs["ties"],
        losses=vs["losses"],
        source=relative_posix(f, paths.root),
    )


def _pair_evidence(kind: str, paths: Paths, f: Path, report: dict | None) -> Evidence | None:
    if not report or not report.get("n"):
        return None
    return Evidence(
        kind,
        _eval_set(paths.data / "rm_test.jsonl"),
        correct=round(report["accuracy"] * report["n"]),
        n_pairs=report["n"],
        ece=report["ece"],
        source=relative_posix(f, paths.root),
    )


def reward_model_evidence(paths: Paths) -> Evidence | None:
    """The vanilla RM's accuracy and ECE on the held-out ``rm_test`` pairs."""
    f = paths.metrics / "reward_model.json"
    m = read_json(f) if f.exists() else {}
    report = {"n": m.get("n_test"), "accuracy": m.get("test_accuracy"), "ece": m.get("test_ece")}
    return _pair_evidence("reward_model", paths, f, report if m else None)


def head_evidence(paths: Paths, run: str) -> Evidence | None:
    """An R2M head's accuracy and ECE (with its final policy's feedback, t = T) on the held-out ``rm_test`` pairs."""
    f = paths.metrics / "eval" / f"{run}.json"
    return _pair_evidence("reward_head", paths, f, (read_json(f) if f.exists() else {}).get("rm_test"))


def promote(
    cfg: Config,
    workdir: str | Path,
    model: str,
    *,
    dry_run: bool = False,
    rollback: bool = False,
    force: bool = False,
) -> dict:
    """Move alias ``champion`` of ``<registry_prefix>-<model>`` to its ``candidate`` version if that passes its
    kind's gate (:func:`r2m.promotion.decide` with ``cfg.promote``), or with ``rollback`` back to the previous
    champion; ``dry_run`` decides (and says why) without moving anything; ``force`` moves it even when the gate
    fails (audited as ``force``, with the failed checks)."""
    from r2m import tracking
    from tasks.common import configure_tracking

    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    configure_tracking(cfg, workdir)
    name, kind = f"{cfg.mlflow.registry_prefix}-{model}", MODELS[model]
    if rollback:
        return tracking.rollback(name, dry_run=dry_run)

    def gate(candidate: int, cand_tags: dict, champion: int | None, champ_tags: dict | None):
        champ = Evidence.from_tags(kind, champ_tags) if champ_tags is not None else None
        return decide(
            Evidence.from_tags(kind, cand_tags),
            champ,
            cfg.promote,
            candidate_version=candidate,
            champion_version=champion,
        )

    return tracking.promote(name, gate, dry_run=dry_run, force=force)


def _tags(evidence: Evidence | None) -> dict[str, str]:
    return evidence.to_tags() if evidence is not None else {}


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
    prompting = {"policy": dataclasses.asdict(cfg.policy)}
    scoring = {"max_length": cfg.reward_model.max_length, "seed": cfg.seed}
    pv = tracking.register_model_dir(
        paths.rl_run(best) / "final" / "policy",
        policy_name,
        run_id=run_id,
        kind="policy",
        description=f"{best} final policy",
        metrics=metrics,
        source_root=paths.root,
        tags=_tags(policy_evidence(paths, best)),
        serving=prompting,
    )
    rv = tracking.register_model_dir(
        paths.rm,
        rm_name,
        run_id=run_id,
        kind="reward_model",
        description="vanilla Bradley-Terry reward model",
        source_root=paths.root,
        tags=_tags(reward_model_evidence(paths)),
        serving=scoring,
    )
    head_runs = [r for r in cfg.run_names() if (paths.rl_run(r) / "final" / "reward_head").exists()]
    if head_runs:  # R2M: the cross-attention + score head of the best R2M-style run, loadable with its trunk + policy
        head_run, _ = pick_best(paths, head_runs)
        final = paths.rl_run(head_run) / "final"
        trunk = final / "reward_model" if (final / "reward_model").exists() else paths.rm  # as the evaluation scores
        hv = tracking.register_model_dir(
            final / "reward_head",
            f"{prefix}-reward-head",
            run_id=run_id,
            kind="reward_head",
            description=f"{head_run} R2M head (with its trunk and final policy)",
            source_root=paths.root,
            tags=_tags(head_evidence(paths, head_run)),
            extra_artifacts={"trunk": trunk, "policy": final / "policy"},
            serving=prompting | scoring,
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
