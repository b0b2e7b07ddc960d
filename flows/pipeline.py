"""The Prefect flow: every stage of the stage table (:mod:`tasks.stages`) in order, as Prefect tasks.

prepare -> sft -> reward_model -> rl and evaluate (each ``<algo>-<method>``) -> hidden_states -> report -> register.
Beside the whole pipeline, three flows a schedule can run on their own (``FLOWS``, ``prefect.yaml``): the RL rounds
only, the evaluation only, and the promotion of a registered model.
Each task runs its stage exactly as ``dvc repro`` does: ``python -m tasks <stage>``, in a process of its own. So the
bytes a stage writes cannot depend on the orchestrator (Prefect's own threads draw from Python's global random
generator, which the RL checkpoint saves), and ``r2m run`` and ``dvc repro`` produce the same files. Tasks are
cached on their content (:mod:`tasks.caching`): an identical rerun runs nothing and registers nothing new. The RL
and evaluation tasks retry once on failure, never on bad input (exit status 2): a retry resumes RL from the last
finished round. One writer per work directory: the flow holds its lock (:mod:`r2m.workdir_lock`) and its stages
inherit it; a second run there fails at once. MLflow: one parent run per configuration (the one ``dvc repro`` uses
too), one nested run per stage.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context

from r2m.config import load_config
from r2m.data.io import read_json
from r2m.env import set_offline_env
from r2m.evaluation.report import timings_report
from r2m.paths import Paths
from r2m.workdir_lock import workdir_lock
from tasks import caching, stages
from tasks.common import REGISTRY_FILE, dvc_pipeline_id

set_offline_env()


def stage_command(
    stage: str,
    params: str,
    profile: str | None,
    overrides: list[str],
    workdir: str,
    mlflow: bool,
    run: str | None = None,
) -> list[str]:
    """The ``python -m tasks`` command line of one stage (the one ``dvc.yaml`` runs, plus the flow's options)."""
    cmd = [sys.executable, "-m", "tasks", stage, "--params", params, "--workdir", workdir]
    if profile:
        cmd += ["--profile", profile]
    for o in overrides:
        cmd += ["--set", o]
    if run is not None:
        algo, method = run.split("-", 1)
        cmd += ["--algo", algo, "--method", method]
    return cmd + ([] if mlflow else ["--no-mlflow"])


USER_ERROR_EXIT = 2  # a stage's exit status for bad input (config, data): retrying cannot help


class StageFailed(RuntimeError):
    """A stage's process exited non-zero."""

    def __init__(self, stage: str, returncode: int, cmd: list[str]):
        super().__init__(f"stage {stage} failed (exit {returncode}): {' '.join(cmd)}")
        self.returncode = returncode


def _transient(task, task_run, state) -> bool:
    """Prefect retry condition: retry a failed stage unless it failed on bad input (exit status 2)."""
    exc = state.result(raise_on_failure=False)
    return not (isinstance(exc, StageFailed) and exc.returncode == USER_ERROR_EXIT)


def _stage_task(stage: stages.Stage):
    """The Prefect task of one stage. Cached on its content key (:mod:`tasks.caching`, passed in as ``key``):
    returns the digest of what it wrote, which the flow checks against the files before trusting a cache hit."""

    def run(cmd: list[str], key: str, run_name: str | None, workdir: str) -> str:
        done = subprocess.run(cmd, check=False)
        if done.returncode != 0:
            raise StageFailed(stage.name, done.returncode, cmd)
        return caching.outputs_digest(stage, run_name, workdir)

    run.__doc__ = stage.doc
    return task(
        name=stage.name,
        cache_key_fn=lambda _ctx, p: f"r2m-{stage.name}-{p['key']}",
        persist_result=True,
        result_serializer="json",
        retries=stage.prefect_retries,
        retry_delay_seconds=2,
        retry_condition_fn=_transient,
    )(run)


TASKS = {s.name: _stage_task(s) for s in stages.STAGES}


def _run_stages(
    names: set[str] | None, profile: str | None, overrides: list[str], params: str, workdir: str, mlflow: bool
) -> dict:
    """Run the stages in ``names`` (every stage when None) in the stage table's order, each of its matrix runs as
    its own task run; returns the config and the paths."""
    logger = get_run_logger()
    cfg = load_config(params, profile=profile, overrides=overrides)
    logger.info("profile=%s runs=%s workdir=%s", cfg.profile, cfg.run_names(), Path(workdir).resolve())
    # one writer per work directory: the stages (child processes) inherit the flow's lock, any other run fails
    with workdir_lock(workdir, command=f"flow {get_run_context().flow_run.name}"):
        for stage in stages.STAGES:
            if names is not None and stage.name not in names:
                continue
            if not stage.needed(cfg):  # an optional stage no method of rl.methods needs
                continue
            if stage.needs_mlflow and not mlflow:
                logger.info("skipping %s (needs MLflow)", stage.name)
                continue
            for run in cfg.run_names() if stage.matrix else [None]:
                cmd = stage_command(stage.name, params, profile, overrides, workdir, mlflow, run)
                _run_cached(stage, cfg, run, cmd)
    return {"cfg": cfg, "paths": Paths.of(cfg, workdir)}


def _run_cached(stage: stages.Stage, cfg, run: str | None, cmd: list[str]) -> None:
    """Run one stage task unless its content key is cached and its outputs are still the ones it wrote; a stale
    hit (outputs changed or deleted since) reruns it and refreshes the cache."""
    workdir = cmd[cmd.index("--workdir") + 1]
    key = caching.input_key(cfg, stage, run, workdir, mlflow="--no-mlflow" not in cmd)
    name = "-".join([stage.name, *([run] if run else [])])
    state = TASKS[stage.name].with_options(task_run_name=name)(cmd, key, run, workdir, return_state=True)
    digest = state.result()  # raises when the stage failed
    if state.name == "Cached" and digest != caching.outputs_digest(stage, run, workdir):
        get_run_logger().info("%s: cached outputs changed on disk; running it again", name)
        TASKS[stage.name].with_options(task_run_name=name, refresh_cache=True)(cmd, key, run, workdir)


@flow(name="r2m-pipeline")
def pipeline(
    profile: str | None = None,
    overrides: list[str] | None = None,
    params: str = "params.yaml",
    workdir: str = ".",
    mlflow: bool = True,
    dry_run: bool = False,
) -> dict:
    """Run the whole pipeline; returns the summary (``metrics/summary.md``), the timings table and the registered
    versions. ``dry_run``: only resolve the stages and check the models' shapes (``r2m run --dry-run``); runs and
    writes nothing, returns the dry-run table."""
    overrides = list(overrides or [])
    if dry_run:
        from flows.dry_run import dry_run_command

        report = dry_run_command(params, profile, overrides, workdir)
        get_run_logger().info("dry run:\n%s", report["table"])
        return {"table": report["table"], "timings": "", "registered": None}
    done = _run_stages(None, profile, overrides, params, workdir, mlflow)
    cfg, paths = done["cfg"], done["paths"]
    registered = read_json(paths.root / REGISTRY_FILE) if mlflow else None
    if mlflow:
        from r2m import tracking
        from tasks.common import configure_tracking

        configure_tracking(cfg, workdir)
        tracking.finish_pipeline_run(dvc_pipeline_id(cfg))
    table = (paths.metrics / "summary.md").read_text()
    create_markdown_artifact(key="r2m-summary", markdown=table, description=f"R2M pipeline summary ({cfg.profile})")
    timings = timings_report(paths.timings, cfg.run_names())
    get_run_logger().info("summary:\n%s\ntimings (wall clock, not reproducible):\n%s", table, timings)
    return {"table": table, "timings": timings, "registered": registered}


RL_STAGES = {"rl"}
EVALUATION_STAGES = {"evaluate", "hidden_states", "report"}


@flow(name="r2m-rl-rounds")
def rl_rounds(
    profile: str | None = None,
    overrides: list[str] | None = None,
    params: str = "params.yaml",
    workdir: str = ".",
    mlflow: bool = True,
) -> list[str]:
    """Only the RL stage, for every ``<algo>-<method>`` run: the iterative rounds with the R2M updates, on the SFT
    policy and reward model already in ``workdir``. A run whose rounds are all done is skipped by its resume
    logic; a crashed one resumes from its last finished round. Returns the run names."""
    done = _run_stages(RL_STAGES, profile, list(overrides or []), params, workdir, mlflow)
    return list(done["cfg"].run_names())


@flow(name="r2m-evaluation")
def evaluation(
    profile: str | None = None,
    overrides: list[str] | None = None,
    params: str = "params.yaml",
    workdir: str = ".",
    mlflow: bool = True,
) -> str:
    """Evaluate the trained policies again (gold / LLM-judge scoring, reward accuracy, hidden-state analysis) and
    rewrite the report, without training; returns ``metrics/summary.md``."""
    done = _run_stages(EVALUATION_STAGES, profile, list(overrides or []), params, workdir, mlflow)
    return (done["paths"].metrics / "summary.md").read_text()


@flow(name="r2m-promotion")
def promotion(
    model: str = "policy",
    dry_run: bool = False,
    rollback: bool = False,
    profile: str | None = None,
    overrides: list[str] | None = None,
    params: str = "params.yaml",
    workdir: str = ".",
) -> dict:
    """Move registry alias ``champion`` to the ``candidate`` version of ``<registry_prefix>-<model>`` if it passes
    its kind's gate, or back to the previous champion (``rollback``); ``dry_run`` moves nothing (``r2m promote``).
    Returns the decision with every check."""
    from tasks.register import promote

    cfg = load_config(params, profile=profile, overrides=list(overrides or []))
    res = promote(cfg, workdir, model, dry_run=dry_run, rollback=rollback)
    get_run_logger().info("promotion of %s: %s", model, res["reason"])
    return res


FLOWS = {"pipeline": pipeline, "rl-rounds": rl_rounds, "evaluation": evaluation, "promotion": promotion}
