"""``r2m``: run the pipeline (Prefect), one stage (as DVC does), schedule it, or promote a registered model."""

from __future__ import annotations

import json
import sys

import click

from r2m.env import set_offline_env

set_offline_env()

STAGES = ("prepare", "sft", "reward_model", "rl", "evaluate", "report", "register")


@click.group()
def main() -> None:
    """R2M: Real-Time Aligned Reward Model, as a Prefect + DVC + MLflow RLHF pipeline."""


def _common(f):
    f = click.option("--workdir", default=".", show_default=True, help="where data/, models/, metrics/ go")(f)
    f = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="override a parameter, e.g. --set rl.steps=40 (repeatable)",
    )(f)
    f = click.option("--params", default="params.yaml", show_default=True)(f)
    f = click.option("--profile", default=None, help="configs/<profile>.yaml (default: params.yaml's profile)")(f)
    return f


@main.command()
@_common
@click.option("--method", "methods", multiple=True, help="RL method(s) to run (default: params)")
@click.option("--algo", "algos", multiple=True, help="grpo and/or rloo (default: params)")
@click.option("--no-mlflow", is_flag=True, help="skip MLflow tracking and registration")
def run(profile, params, overrides, workdir, methods, algos, no_mlflow) -> None:
    """Run the whole pipeline as a Prefect flow."""
    from flows.pipeline import pipeline

    ov = list(overrides)
    if methods:
        ov.append(f"rl.methods={json.dumps(list(methods))}")
    if algos:
        ov.append(f"rl.algos={json.dumps(list(algos))}")
    result = pipeline(profile=profile, overrides=ov, params=params, workdir=workdir, mlflow=not no_mlflow)
    click.echo(result["table"])


@main.command()
@click.argument("name", type=click.Choice(STAGES))
@_common
@click.option("--algo", default="grpo", show_default=True)
@click.option("--method", default="vanilla", show_default=True)
@click.option("--no-mlflow", is_flag=True)
def stage(name, profile, params, overrides, workdir, algo, method, no_mlflow) -> None:
    """Run one stage (what ``dvc repro`` runs), without Prefect."""
    import importlib

    from r2m.config import load_config
    from tasks.common import dvc_pipeline_id

    cfg = load_config(params, profile=profile, overrides=list(overrides))
    mod = importlib.import_module(f"tasks.{name}")
    kwargs = {"algo": algo, "method": method} if name in ("rl", "evaluate") else {}
    mod.run(cfg, workdir, dvc_pipeline_id(cfg), mlflow=not no_mlflow, **kwargs)


@main.command()
@_common
@click.option("--cron", required=True, help='cron schedule, e.g. "0 3 * * *"')
@click.option("--name", default="r2m-scheduled", show_default=True)
def schedule(profile, params, overrides, workdir, cron, name) -> None:
    """Serve the pipeline on a cron schedule (needs a Prefect server: ``prefect server start``)."""
    from flows.pipeline import pipeline

    pipeline.serve(
        name=name,
        cron=cron,
        parameters={"profile": profile, "overrides": list(overrides), "params": params, "workdir": workdir},
    )


@main.command()
@click.option("--model", "which", type=click.Choice(["policy", "reward-model"]), default="policy", show_default=True)
@click.option("--metric", default="win_rate_vs_reference", show_default=True)
@click.option("--min-value", type=float, default=None, help="absolute gate on the metric")
@_common
def promote(which, metric, min_value, profile, params, overrides, workdir) -> None:
    """Move alias ``champion`` to the ``candidate`` version if it beats the current champion on METRIC."""
    from r2m import tracking
    from r2m.config import load_config
    from tasks.common import tracking_uri

    cfg = load_config(params, profile=profile, overrides=list(overrides))
    tracking.configure(tracking_uri(cfg, workdir), cfg.mlflow.experiment)
    res = tracking.promote(f"{cfg.mlflow.registry_prefix}-{which}", metric=metric, min_value=min_value)
    click.echo(json.dumps(res, indent=2))
    sys.exit(0 if res["promoted"] else 1)
