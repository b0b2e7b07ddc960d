"""Shared plumbing for the stages: paths, config loading for ``python -m tasks.<stage>``, MLflow stage runs."""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from r2m.config import Config, load_config
from r2m.env import set_offline_env
from r2m.paths import Paths  # noqa: F401  (re-exported until every caller imports r2m.paths)

set_offline_env()
log = logging.getLogger("r2m")
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
    """``mlflow.tracking_uri`` with a relative sqlite path resolved against the working directory."""
    uri = cfg.mlflow.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(workdir).resolve() / uri[len('sqlite:///') :]}"
    return uri


@contextlib.contextmanager
def tracked(
    stage: str, cfg: Config, workdir: str | Path, pipeline_id: str | None, extra_params: dict | None = None
) -> Iterator[object]:
    """An MLflow nested run for one stage (``mlflow.tracking_uri`` relative to the working directory)."""
    from r2m import tracking

    tracking.configure(
        tracking_uri(cfg, workdir),
        cfg.mlflow.experiment,
        artifact_location=str(Path(workdir).resolve() / "mlartifacts"),
    )
    params = {"profile": cfg.profile, "seed": cfg.seed, **(extra_params or {}), **_stage_params(stage, cfg)}
    t0 = time.perf_counter()
    with tracking.stage_run(stage, pipeline_id=pipeline_id, params=params) as run:
        yield run
        tracking.log_metrics_dict({"stage_seconds": time.perf_counter() - t0})


def _stage_params(stage: str, cfg: Config) -> dict:
    d = cfg.to_dict()
    sections = {
        "prepare": ["data"],
        "sft": ["policy", "tokenizer", "sft"],
        "reward_model": ["reward_model"],
        "rl": ["rl", "r2m"],
        "evaluate": ["evaluate"],
        "hidden_states": ["analysis"],
    }.get(stage, [])
    return {k: d[k] for k in sections}


def stage_argparser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--workdir", default=".")
    ap.add_argument("--no-mlflow", action="store_true", help="do not log this stage to MLflow")
    return ap


def config_from_args(args: argparse.Namespace) -> Config:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return load_config(args.params, profile=args.profile, overrides=args.overrides)


def set_threads(cfg: Config) -> None:
    import torch

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)


def run_stage(
    stage: str,
    fn,
    cfg: Config,
    workdir: str | Path = ".",
    pipeline_id: str | None = None,
    mlflow: bool = True,
    **kwargs,
) -> dict:
    """Run stage function ``fn(cfg, workdir, **kwargs) -> {"metrics": {...}, "artifacts": [...]}``, inside an
    MLflow stage run unless ``mlflow`` is False; logs its metrics and artifacts."""
    if not mlflow:
        return fn(cfg, workdir, **kwargs)
    from r2m import tracking

    run_name = "-".join([stage, *[str(v) for v in kwargs.values()]])
    with tracked(run_name, cfg, workdir, pipeline_id, extra_params=kwargs):
        result = fn(cfg, workdir, **kwargs)
        tracking.log_metrics_dict(result.get("metrics", {}))
        for rows in result.get("step_metrics", []):
            tracking.log_step_metrics(rows)
        for path in result.get("artifacts", []):
            tracking.log_artifacts(path)
    return result


def stage_main(stage: str, fn, doc: str | None, run_args: tuple[str, ...] = ()) -> None:
    """``python -m tasks.<stage>``: what ``dvc.yaml`` calls. ``run_args`` are extra ``--name`` options passed to
    ``fn`` as keyword arguments (e.g. ``--algo grpo --method vanilla``)."""
    ap = stage_argparser(doc or stage)
    for name in run_args:
        ap.add_argument(f"--{name}", required=True)
    a = ap.parse_args()
    cfg = config_from_args(a)
    kwargs = {name: getattr(a, name) for name in run_args}
    run_stage(stage, fn, cfg, a.workdir, dvc_pipeline_id(cfg), mlflow=not a.no_mlflow, **kwargs)
