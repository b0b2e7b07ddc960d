"""Shared plumbing for the stages: running one stage of the table (``python -m tasks <stage>``, the Prefect flow,
``r2m stage``) with its config view, threads and MLflow stage run."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from r2m.config import Config, ConfigError, load_config
from r2m.data.io import DatasetError, DataValidationError, write_json
from r2m.env import numerics_info, set_offline_env
from r2m.paths import Paths  # noqa: F401  (re-exported until every caller imports r2m.paths)
from r2m.rl.numerics import NumericalFault
from r2m.workdir_lock import WorkdirLocked, workdir_lock
from tasks import stages
from tasks.outputs import transaction

set_offline_env()
log = logging.getLogger("r2m")
# bad input a user can fix (and a run stopped by its numbers, which a retry would only repeat): printed as one line
# (no traceback unless --debug), exit status 2
USER_ERRORS = (ConfigError, DataValidationError, DatasetError, WorkdirLocked, NumericalFault)
REGISTRY_FILE = "registry.json"  # register's record of the versions it made (beside mlflow.db; no DVC output)
# the stages show their own progress bars; silence transformers' per-shard bars and deprecation chatter
warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
try:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
except ImportError:  # pragma: no cover
    pass


def dvc_pipeline_id(cfg: Config) -> str:
    """Stages run by ``dvc repro`` (one process each) share the MLflow parent run of this configuration."""
    return f"dvc-{cfg.fingerprint()}"


def tracking_uri(cfg: Config, workdir: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set (MLflow's own convention, e.g. a tracking server), else
    ``mlflow.tracking_uri``; a relative sqlite path is resolved against the working directory."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.mlflow.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(workdir).resolve() / uri[len('sqlite:///') :]}"
    return uri


def configure_tracking(cfg: Config, workdir: str | Path, artifact_location: str | None = None) -> str:
    """Point MLflow at the project's tracking URI (:func:`tracking_uri`) and ``mlflow.experiment``; returns the
    experiment id. ``artifact_location``: where a new experiment keeps its artifacts (``r2m.tracking.configure``)."""
    from r2m import tracking

    return tracking.configure(tracking_uri(cfg, workdir), cfg.mlflow.experiment, artifact_location=artifact_location)


@contextlib.contextmanager
def tracked(
    name: str,
    cfg: Config,
    workdir: str | Path,
    pipeline_id: str | None,
    params: dict | None = None,
    tags: dict | None = None,
) -> Iterator[object]:
    """An MLflow run ``name`` (``mlflow.tracking_uri`` relative to the working directory) with ``params`` and
    ``tags``, nested under the pipeline's parent run when there is one (``pipeline_id`` or ``R2M_PIPELINE_ID``).

    Both runs are tagged with the code's git state (:func:`tasks.lineage.git_state`). The parent carries the whole
    configuration as params, is RUNNING while a stage runs
    and ends FINISHED or FAILED with it, so a ``dvc repro`` (one process per stage, no flow to close the parent)
    leaves no run RUNNING. Yields the stage run; its ``parent_id`` attribute is the parent's id (or None).
    """
    from r2m import tracking

    configure_tracking(cfg, workdir, artifact_location=str(Path(workdir).resolve() / "mlartifacts"))
    from tasks import lineage

    git = lineage.git_state(stages.ROOT)  # on the stage run and its parent
    pid = pipeline_id or os.environ.get(tracking.PIPELINE_ID_ENV) or None
    parent = None
    if pid:
        parent = tracking.pipeline_run(pid, tags=git)
        differ = tracking.log_new_params(parent, cfg.to_dict())
        if differ:  # one parent for several configurations (a shared R2M_PIPELINE_ID): say so on the run
            tracking.set_tags(parent, {"r2m.config.differs": ", ".join(differ)})
        tracking.set_run_status(parent, "RUNNING")
    t0 = time.perf_counter()
    status = "FAILED"
    try:
        params = {"profile": cfg.profile, "seed": cfg.seed, **(params or {})}
        with tracking.stage_run(name, pipeline_id=pid, params=params, tags={**git, **(tags or {})}) as run:
            run.parent_id = parent
            yield run
            tracking.log_metrics_dict({"stage_seconds": time.perf_counter() - t0})
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if parent:
            tracking.set_run_status(parent, status)


def set_threads(cfg: Config) -> None:
    """``threads`` torch intra-op threads (0: torch's default). Results are bitwise reproducible only for a fixed
    thread count (reductions split their work per thread), see docs/reproducibility.md."""
    import torch

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global generators from ``seed``, before every stage: a stage's bytes then do
    not depend on what ran before it in the same process (the Prefect flow runs all stages in one process,
    ``dvc repro`` each in its own)."""
    from transformers import set_seed

    set_seed(seed)


def run_stage(
    name: str,
    cfg: Config,
    workdir: str | Path = ".",
    pipeline_id: str | None = None,
    mlflow: bool = True,
    run: str | None = None,
    **kwargs,
) -> dict:
    """Run stage ``name`` of the stage table (``run``: the ``<algo>-<method>`` of a matrix stage).

    The stage function sees only the config it declares; its result ``{"metrics": {...}, "step_metrics": [...],
    "artifacts": [...]}`` is logged to an MLflow stage run unless ``mlflow`` is False. ``kwargs`` go to the stage
    function as they are (e.g. ``progress=False``).
    """
    stage = stages.get(name)
    from r2m.distributed import launched_rank

    follower = launched_rank() != 0  # a rank of `accelerate launch` other than the main one: it writes nothing shared
    mlflow = mlflow and not follower
    if stage.needs_mlflow and not mlflow:
        raise ValueError(f"the {name} stage needs MLflow (it writes to the model registry)")
    matrix = stage.matrix_kwargs(run)
    view = stages.stage_config(cfg, stage)
    label = "-".join([name, *matrix.values()])
    # one writer per work directory; under `accelerate launch` rank 0 holds it for every rank
    with (
        contextlib.nullcontext() if follower else workdir_lock(workdir, command=f"stage {label}"),
        contextlib.nullcontext() if follower else transaction(stage, run, workdir, label),
    ):
        set_threads(cfg)
        seed_everything(cfg.seed)
        fn = stage.function()
        t0 = time.perf_counter()
        if not mlflow:
            result = fn(view, workdir, **matrix, **kwargs)
            if not follower:
                write_timings(Paths.of(view, workdir), label, time.perf_counter() - t0, result)
            return result
        from r2m import tracking
        from tasks import lineage

        params = {**matrix, **stages.declared_params(cfg, stage)}
        tags = lineage.stage_tags(cfg, stage, run, workdir)
        with tracked(label, cfg, workdir, pipeline_id, params=params, tags=tags) as active:
            result = fn(view, workdir, **matrix, **kwargs)
            tracking.log_metrics_dict(result.get("metrics", {}))
            if result.get("headline") and active.parent_id:  # the results a reader looks for first, on the parent
                tracking.log_metrics_dict(result["headline"], run_id=active.parent_id)
            for rows in result.get("step_metrics", []):
                tracking.log_step_metrics(rows)
            for path in result.get("artifacts", []):
                tracking.log_artifacts(path)
            timings = write_timings(Paths.of(view, workdir), label, time.perf_counter() - t0, result)
            tracking.log_metrics_dict({f"timing.{k}": v for k, v in timings.items() if isinstance(v, int | float)})
        return result


def write_timings(paths: Paths, label: str, seconds: float, result: dict) -> dict:
    """``timings/<label>.json``: the stage's wall-clock seconds, what it timed itself, and the numerics in force.
    Kept out of every DVC output, so that the reproducible outputs (and ``dvc.lock``) stay byte-stable."""
    out = {"stage_seconds": seconds, **result.get("timings", {}), "numerics": numerics_info()}
    write_json(paths.timings / f"{label}.json", out)
    return out


def stage_main(argv: list[str] | None = None) -> None:
    """``python -m tasks <stage> [--algo A --method M]``: what ``dvc.yaml`` runs, one process per stage."""
    ap = argparse.ArgumentParser(prog="python -m tasks", description="run one pipeline stage (what dvc repro runs)")
    ap.add_argument("stage", choices=stages.NAMES)
    ap.add_argument("--algo", help="matrix stages (rl, evaluate): the RL algorithm")
    ap.add_argument("--method", help="matrix stages (rl, evaluate): the method")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--workdir", default=".")
    ap.add_argument("--no-mlflow", action="store_true", help="do not log this stage to MLflow")
    ap.add_argument("--debug", action="store_true", help="on bad input, show the traceback too")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stage = stages.get(a.stage)
    if stage.matrix and not (a.algo and a.method):
        ap.error(f"stage {a.stage} runs per <algo>-<method>: pass --algo and --method")
    run = f"{a.algo}-{a.method}" if stage.matrix else None
    try:
        cfg = load_config(a.params, profile=a.profile, overrides=a.overrides)
        if os.environ.get("DVC_STAGE"):  # run by dvc repro: from a dvc.yaml that matches params.yaml's runs
            from tasks.dvc_yaml import check

            stale = check(Path(os.environ.get("DVC_ROOT", ".")) / "dvc.yaml", cfg)
            if stale:
                raise ConfigError(stale)
        run_stage(a.stage, cfg, a.workdir, dvc_pipeline_id(cfg), mlflow=not a.no_mlflow, run=run)
    except USER_ERRORS as e:  # bad input: one line naming the file/key, no traceback
        if a.debug:
            raise
        print(f"error: {a.stage}: {e}", file=sys.stderr)
        sys.exit(2)
