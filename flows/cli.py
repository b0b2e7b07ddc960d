"""``r2m``: run the pipeline (Prefect), one stage (as DVC does), schedule it, write ``dvc.yaml`` from the stage table,
judge and evaluate its outputs, or promote a registered model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from r2m.env import set_offline_env
from tasks import stages

set_offline_env()


class _Cli(click.Group):
    """Bad input a user can fix (a config or data error, no Prefect server to schedule on) from any command: one
    line ``error: <command>: ...`` on stderr and exit status 2, no traceback unless ``r2m --debug`` (or
    ``R2M_DEBUG=1``)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as e:
            from flows.schedule import NoServerError
            from tasks.common import USER_ERRORS

            if not isinstance(e, (*USER_ERRORS, NoServerError)) or ctx.meta.get(DEBUG) or os.environ.get("R2M_DEBUG"):
                raise
            click.echo(f"error: {ctx.invoked_subcommand or ctx.info_name}: {e}", err=True)
            sys.exit(2)


DEBUG = "r2m.debug"


@click.group(cls=_Cli)
@click.version_option(package_name="r2m", prog_name="r2m")
@click.option("--debug", is_flag=True, help="on bad input (config, data), show the traceback too")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """R2M: Real-Time Aligned Reward Model, as a Prefect + DVC + MLflow RLHF pipeline."""
    ctx.meta[DEBUG] = debug


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
@click.option(
    "--dry-run",
    is_flag=True,
    help="only check: load the config, resolve every stage and its inputs, and check the models' and the R2M "
    "head's shapes on stand-ins built from configs/models/ (no download, no GPU); runs and writes nothing",
)
def run(profile, params, overrides, workdir, methods, algos, no_mlflow, dry_run) -> None:
    """Run the whole pipeline as a Prefect flow (``--dry-run``: check it without running anything)."""
    ov = list(overrides)
    if methods:
        ov.append(f"rl.methods={json.dumps(list(methods))}")
    if algos:
        ov.append(f"rl.algos={json.dumps(list(algos))}")
    if dry_run:
        _dry_run(params, profile, ov, workdir)
        return
    from r2m.config import load_config

    load_config(params, profile=profile, overrides=ov)  # a bad config fails here, before any flow run starts
    from flows.pipeline import pipeline

    result = pipeline(profile=profile, overrides=ov, params=params, workdir=workdir, mlflow=not no_mlflow)
    click.echo(result["table"])
    click.echo(f"Timings (wall clock; kept apart from the reproducible outputs, in {workdir}/timings/):")
    click.echo(result["timings"])


def _dry_run(params: str, profile: str | None, overrides: list[str], workdir: str) -> None:
    """Print the dry-run report; a bad config is one line on stderr and exit status 2."""
    from flows.dry_run import dry_run_command
    from r2m.config import ConfigError

    try:
        report = dry_run_command(params, profile, overrides, workdir)
    except ConfigError as e:
        click.echo(f"error: dry run: {e}", err=True)
        sys.exit(2)
    click.echo(report["table"])


@main.command()
@_common
def timings(profile, params, overrides, workdir) -> None:
    """Print the wall-clock table of the last run of each stage (timings/*.json): RL seconds per step, the R2M
    update's share, peak memory, stage seconds."""
    from r2m.config import load_config
    from r2m.evaluation.report import timings_report
    from r2m.paths import Paths

    cfg = load_config(params, profile=profile, overrides=list(overrides))
    click.echo(timings_report(Paths.of(cfg, workdir).timings, cfg.run_names()))


@main.command()
@click.argument("name", type=click.Choice(stages.NAMES))
@_common
@click.option("--algo", default=None, help="matrix stages (rl, evaluate): the RL algorithm")
@click.option("--method", default=None, help="matrix stages (rl, evaluate): the method")
@click.option("--no-mlflow", is_flag=True)
@click.option("--debug", is_flag=True, help="on bad input, show the traceback too")
def stage(name, profile, params, overrides, workdir, algo, method, no_mlflow, debug) -> None:
    """Run one stage (what ``dvc repro`` runs), without Prefect. Bad input (config, data files) is one line on
    stderr and exit status 2."""
    from r2m.config import load_config
    from tasks.common import USER_ERRORS, dvc_pipeline_id, run_stage

    try:
        cfg = load_config(params, profile=profile, overrides=list(overrides))
        run = f"{algo or cfg.rl.algos[0]}-{method or cfg.rl.methods[0]}" if stages.get(name).matrix else None
        run_stage(name, cfg, workdir, dvc_pipeline_id(cfg), mlflow=not no_mlflow, run=run)
    except USER_ERRORS as e:
        if debug or click.get_current_context().meta.get(DEBUG) or os.environ.get("R2M_DEBUG"):
            raise
        click.echo(f"error: {name}: {e}", err=True)
        sys.exit(2)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def results(args) -> None:
    """The results protocol: every algo x method over seeds, each stage in its own process, then means with 95%
    CIs, paired differences to vanilla and the gold/proxy vs sqrt(KL) frontier (``r2m results --help``)."""
    from flows.results import main as results_main

    results_main(list(args))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def compare(args) -> None:
    """One method against every other method of a finished ``r2m results`` directory, paired by seed, with 95%
    CIs and Holm-corrected verdicts (``r2m compare --help``)."""
    from flows.compare import main as compare_main

    compare_main(list(args))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sweep(args) -> None:
    """One method's parameter over values on top of a finished ``r2m results`` directory, each value against the
    same vanilla runs, with 95% CIs (``r2m sweep --help``)."""
    from flows.sweep import main as sweep_main

    sweep_main(list(args))


@main.command()
@click.option("--markdown", is_flag=True, help="as the README's markdown table")
def methods(markdown) -> None:
    """List the methods registry (r2m/rl/methods.py): name, reward, update, parameters, source."""
    from r2m.rl.methods import methods_table

    click.echo(methods_table(markdown=markdown))


@main.command("dvc-yaml")
@click.option("--check", is_flag=True, help="only check that dvc.yaml is what the stage table generates")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="the project directory: its params.yaml is read and its dvc.yaml written (a clone, not the install)",
)
def dvc_yaml(check, repo) -> None:
    """Write dvc.yaml from the stage table (tasks/stages.py) and REPO's params.yaml."""
    from tasks import dvc_yaml as gen

    if not (repo / "params.yaml").is_file():
        raise click.ClickException(f"{repo.resolve()} has no params.yaml: run this in the project (or pass --repo)")
    path = repo / "dvc.yaml"
    if check:
        err = gen.check(path)
        if err:
            raise click.ClickException(err)
        click.echo(f"{path} is up to date with the stage table")
        return
    click.echo(f"wrote {gen.write(path)}")


@main.command()
@_common
@click.option(
    "--flow",
    "which",
    type=click.Choice(["pipeline", "rl-rounds", "evaluation", "promotion"]),
    default="pipeline",
    show_default=True,
    help="what each scheduled run does (prefect.yaml has all four)",
)
@click.option("--cron", multiple=True, help='cron schedule in UTC, e.g. "0 3 * * *" (repeatable)')
@click.option("--interval", type=float, multiple=True, help="interval schedule in seconds (repeatable)")
@click.option("--name", default="r2m-scheduled", show_default=True, help="the deployment's name")
@click.option("--limit", type=int, default=1, show_default=True, help="runs at once; a run due beyond it waits")
@click.option("--dry-run", is_flag=True, help="pipeline only: each run resolves and checks the stages, trains nothing")
@click.option("--no-mlflow", is_flag=True)
def schedule(profile, params, overrides, workdir, which, cron, interval, name, limit, dry_run, no_mlflow) -> None:
    """Serve a flow on cron / interval schedules until interrupted. Needs a running Prefect server
    (``prefect server start``, ``PREFECT_API_URL``); an ephemeral one is refused, since its schedules never fire."""
    from flows.schedule import require_server, serve_kwargs
    from r2m.config import load_config

    ov = list(overrides)
    load_config(params, profile=profile, overrides=ov)  # a bad config fails here, not in every scheduled run
    if dry_run and which != "pipeline":
        raise click.UsageError("--dry-run schedules the pipeline's dry run; it needs --flow pipeline")
    parameters = {"profile": profile, "overrides": ov, "params": params, "workdir": workdir}
    if which == "pipeline":
        parameters |= {"mlflow": not no_mlflow, "dry_run": dry_run}
    elif which != "promotion":
        parameters["mlflow"] = not no_mlflow
    try:
        kwargs = serve_kwargs(name, cron, interval, limit, parameters)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    url = require_server()
    click.echo(f"serving {which} as deployment {name!r} on {url} (Ctrl-C stops)", err=True)
    from flows.pipeline import FLOWS

    FLOWS[which].serve(**kwargs)


def _promotion_text(res: dict) -> str:
    """A promotion decision or rollback as lines a reviewer reads: every check with PASS / FAIL, then the outcome."""
    if "checks" not in res:
        verb = "would roll back" if res["dry_run"] else "rolled back"
        return f"{res['model']}: champion {verb} from v{res['from']} to v{res['to']}"
    champion = f"champion v{res['champion']}" if res["champion"] is not None else "no champion"
    lines = [f"{res['model']}: candidate v{res['candidate']} vs {champion}"]
    lines += [f"  {'PASS' if c['passed'] else 'FAIL'}  {c['check']}" for c in res["checks"]]
    if res["dry_run"]:
        outcome = "would be promoted (dry run: nothing moved)" if res["promote"] else "would not be promoted (dry run)"
    else:
        outcome = "promoted to champion" if res["promoted"] else "not promoted: the champion stays"
        if res.get("forced"):
            outcome = "forced to champion although the gate failed (recorded as 'force' in the audit log)"
    return "\n".join([*lines, f"=> v{res['candidate']} {outcome}"])


@main.command()
@click.option(
    "--model",
    "which",
    type=click.Choice(["policy", "reward-model", "reward-head"]),
    default="policy",
    show_default=True,
    help="which registered model: <registry_prefix>-<model>",
)
@click.option("--dry-run", is_flag=True, help="decide and print why, move nothing")
@click.option("--rollback", is_flag=True, help="move champion back to the version that held it before this one")
@click.option(
    "--force", is_flag=True, help="a reviewer's override: move champion even if the gate fails (audited as 'force')"
)
@click.option("--history", is_flag=True, help="print the audit log of the model's alias moves and exit")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@_common
def promote(which, dry_run, rollback, force, history, as_json, profile, params, overrides, workdir) -> None:
    """Move alias ``champion`` to the ``candidate`` version if it passes its kind's gate (policy: held-out judge win
    rate vs the references; reward model / R2M head: held-out accuracy and ECE; each with a confidence interval and
    a margin against the champion, gates in params.yaml ``promote``). Exit 0 when it moved (or would, with
    --dry-run, or --force), 1 when the gate keeps the champion."""
    from r2m import tracking
    from r2m.config import load_config
    from tasks.register import promote as promote_candidate

    cfg = load_config(params, profile=profile, overrides=list(overrides))
    try:
        if history:
            from tasks.common import configure_tracking

            configure_tracking(cfg, workdir)
            entries = tracking.audit_log(f"{cfg.mlflow.registry_prefix}-{which}")
            click.echo(json.dumps(entries, indent=2) if as_json else _audit_text(entries))
            return
        res = promote_candidate(cfg, workdir, which, dry_run=dry_run, rollback=rollback, force=force)
    except LookupError as e:
        click.echo(f"error: promote: {e.args[0] if e.args else e}", err=True)
        sys.exit(2)
    click.echo(json.dumps(res, indent=2) if as_json else _promotion_text(res))
    sys.exit(0 if rollback or res["promote"] or res.get("forced") else 1)


def _audit_text(entries: list[dict]) -> str:
    lines = ["| # | time (UTC) | action | alias | from | to | user | reason |", "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        frm = "-" if e["from"] is None else f"v{e['from']}"
        lines.append(
            f"| {e['seq']} | {e['time']} | {e['action']} | {e['alias']} | {frm} | v{e['to']} | {e['user']} | "
            f"{e['reason']} |"
        )
    return "\n".join(lines)


@main.command("runs")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="metric column pattern, e.g. '*.gold_final' (repeatable; default: RM accuracy, gold, win rate vs SFT)",
)
@click.option("--stages", is_flag=True, help="list every stage run too, not only the pipeline (parent) runs")
@click.option("--max-results", type=int, default=20, show_default=True)
@_common
def runs_cmd(metrics, stages, max_results, profile, params, overrides, workdir) -> None:
    """The experiment's MLflow runs as a table, newest first: status, git commit, profile, seed, headline metrics."""
    from r2m import tracking
    from r2m.config import load_config
    from tasks.common import configure_tracking

    configure_tracking(load_config(params, profile=profile, overrides=list(overrides)), workdir)
    header, rows = tracking.runs_table(metrics or tracking.DEFAULT_RUN_METRICS, stages, max_results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    click.echo("\n".join(lines))


def _judge_options(f):
    f = click.option("--no-mlflow", is_flag=True, help="do not log to MLflow")(f)
    f = click.option(
        "--max-items", type=int, default=None, help="judge only the first N eval prompts (judge.max_items)"
    )(f)
    f = click.option("--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")(f)
    f = click.option("--model", default=None, help="model name at the endpoint (openai) or local model (local)")(f)
    f = click.option("--template", default=None, help="tldr | alpaca_eval | path to a template file")(f)
    f = click.option("--judge", "kind", type=click.Choice(["gold", "openai", "local"]), default=None)(f)
    return f


def _judge_config(profile, params, overrides, kind, template, model, base_url, max_items):
    from r2m.config import load_config

    ov = list(overrides)
    if kind:
        ov.append(f"judge.kind={kind}")
    if template:
        ov.append(f"judge.template={template}")
    if model:
        key = "judge.local_model" if (kind or "") == "local" else "judge.model"
        ov.append(f"{key}={model}")
    if base_url:
        ov.append(f"judge.base_url={base_url}")
    if max_items is not None:
        ov.append(f"judge.max_items={max_items}")
    return load_config(params, profile=profile, overrides=ov)


@main.command()
@click.option(
    "--a", "a", required=True, help="model under test: reference | sft | <algo>-<method>[@round_<k>] | .jsonl"
)
@click.option("--b", "b", required=True, help="baseline, same forms as --a")
@_judge_options
@_common
def judge(a, b, kind, template, model, base_url, max_items, no_mlflow, profile, params, overrides, workdir) -> None:
    """Judge A against B on the eval prompts (both orders) and print the win-rate report.

    The API key of an OpenAI-compatible judge is read from the environment variable named by judge.api_key_env
    (default OPENAI_API_KEY); it is never logged or stored.
    """
    from tasks.judging import judge_command

    cfg = _judge_config(profile, params, overrides, kind, template, model, base_url, max_items)
    result = judge_command(cfg, workdir, a, b, mlflow=not no_mlflow)
    click.echo(result["markdown"])
    click.echo(f"written: {', '.join(str(f) for f in result['files'])}")


@main.command()
@_judge_options
@_common
def evaluate(kind, template, model, base_url, max_items, no_mlflow, profile, params, overrides, workdir) -> None:
    """Evaluation report of a finished pipeline run with the chosen judge: win rates (vs references, vs SFT, each
    method vs vanilla RL), RM accuracy on held-out and judge-labelled policy pairs, over-optimisation numbers."""
    from tasks.judging import evaluate_command

    cfg = _judge_config(profile, params, overrides, kind, template, model, base_url, max_items)
    result = evaluate_command(cfg, workdir, mlflow=not no_mlflow)
    click.echo(result["markdown"])
    click.echo(f"written: {', '.join(str(f) for f in result['files'][:2])} (+ verdict files)")
