"""Shared plumbing for the stages: paths, config loading for ``python -m tasks.<stage>``, MLflow stage runs."""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from r2m.config import Config, load_config
from r2m.env import set_offline_env

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


@dataclass(frozen=True)
class Paths:
    """Resolved stage locations under one working directory."""

    root: Path
    data: Path
    models: Path
    metrics: Path
    plots: Path

    @classmethod
    def of(cls, cfg: Config, workdir: str | Path = ".") -> Paths:
        root = Path(workdir).resolve()
        p = cfg.paths
        return cls(root, root / p.data, root / p.models, root / p.metrics, root / p.plots)

    @property
    def sft(self) -> Path:
        return self.models / "sft"

    @property
    def rm(self) -> Path:
        return self.models / "rm"

    def rl_run(self, run: str) -> Path:
        return self.models / "rl" / run


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


def load_gold(paths: Paths):
    """``(posts, gold_fn)`` for the embedded task, where ``gold_fn(post_ids, completions) -> scores``;
    ``(None, None)`` for real datasets (no ``posts.jsonl``, so no gold judge)."""
    posts_file = paths.data / "posts.jsonl"
    if not posts_file.exists():
        return None, None
    from r2m.data.gold import GoldJudge
    from r2m.data.io import read_jsonl
    from r2m.data.task import Post

    posts = {p["id"]: Post.from_dict(p) for p in read_jsonl(posts_file)}
    judge = GoldJudge()

    def gold_fn(post_ids, completions) -> list[float]:
        return [judge.score(posts[i], c) for i, c in zip(post_ids, completions, strict=True)]

    return posts, gold_fn


def gold_judge(posts, gold_fn):
    """The embedded task's gold scorer as a pairwise judge (``posts``, ``gold_fn`` from :func:`load_gold`)."""
    from r2m.judges.gold import GoldPairwiseJudge

    return GoldPairwiseJudge(lambda post, text: gold_fn([post.id], [text])[0], posts)
