"""``r2m run --dry-run``: load the config, resolve every stage it runs, and check the models' shapes, without running
anything (no Prefect flow, no stage, no file written under the working directory).

The stage table (:mod:`tasks.stages`) is resolved here, because the library (:mod:`r2m.dry_run`, which checks the
models, the R2M head and the judge) never imports the stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r2m.config import Config, ConfigError, load_config
from r2m.dry_run import dry_run as check_models
from tasks import stages


def _expand(paths: tuple[str, ...], runs: list[str | None]) -> list[str]:
    """Declared paths with ``{run}`` replaced by each run name (matrix stages), in order, without repeats."""
    out = [p.replace(stages.RUN, run) if run else p for run in runs for p in paths]
    return list(dict.fromkeys(out))


def _produced_by(dep: str, written: set[str]) -> bool:
    """Whether an earlier stage writes ``dep``: the same path, or files under the directory ``dep`` names."""
    return dep in written or any(w.startswith(dep.rstrip("/") + "/") for w in written)


def _writes(stage: stages.Stage) -> tuple[str, ...]:
    """Everything ``stage`` writes: outs, metrics files, plot CSVs and PNG plots."""
    return (*(o.path for o in stage.outs), *stage.metrics, *(p.path for p in stage.plots), *stage.images)


def resolve_stages(cfg: Config) -> list[dict[str, Any]]:
    """Every stage ``cfg``'s pipeline runs (:meth:`~tasks.stages.Stage.needed`), in order, with its matrix runs and
    its declared deps / writes / params, each dep found among an earlier stage's outputs and each declared param read
    through the stage's config view. A dep no earlier stage writes is a :class:`ConfigError`."""
    rows, written = [], set()
    for stage in stages.STAGES:
        if not stage.needed(cfg):
            continue
        runs: list[str | None] = list(cfg.run_names()) if stage.matrix else [None]
        deps = _expand(stage.deps, runs)
        missing = [d for d in deps if not _produced_by(d, written)]
        if missing:
            raise ConfigError(f"stage {stage.name!r}: input {missing[0]} is written by no earlier stage")
        stages.declared_params(cfg, stage)  # every declared key exists in the config
        stages.stage_config(cfg, stage)  # the view the stage function will see
        writes = _expand(_writes(stage), runs)
        written.update(writes)
        rows.append(
            {
                "name": stage.name,
                "matrix": stage.matrix,
                "runs": [r for r in runs if r],
                "deps": deps,
                "writes": writes,
                "params": list(stage.params),
                "needs_mlflow": stage.needs_mlflow,
                "optional": stage.optional,
            }
        )
    return rows


def run_dry_run(cfg: Config, workdir: str | Path = ".", models_dir: str | Path | None = None) -> dict[str, Any]:
    """The dry-run report of ``cfg`` (:func:`r2m.dry_run.dry_run` with the resolved stage table)."""
    return check_models(cfg, stages=resolve_stages(cfg), models_dir=models_dir, workdir=workdir)


def dry_run_command(
    params: str | Path, profile: str | None, overrides: list[str], workdir: str | Path = "."
) -> dict[str, Any]:
    """What ``r2m run --dry-run`` does: load the config (profile + overrides) and dry-run it. The model configs are
    looked up in ``configs/models/`` beside the params file's ``configs/``."""
    cfg = load_config(params, profile=profile, overrides=overrides)
    return run_dry_run(cfg, workdir, Path(params).resolve().parent / "configs" / "models")
