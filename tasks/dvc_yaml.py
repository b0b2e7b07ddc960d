"""``dvc.yaml`` generated from the stage table (:mod:`tasks.stages`): ``r2m dvc-yaml`` writes it, ``--check`` fails
when the committed file differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tasks.stages import COMMON_PARAMS, ROOT, RUN, STAGES, Stage

HEADER = """\
# GENERATED from the stage table in tasks/stages.py by `r2m dvc-yaml`: edit the table, not this file.
# `dvc repro` reruns what changed; `dvc exp run -S rl.steps=80` runs a variant. Each stage runs
# `python -m tasks <stage>`, the same function as the Prefect flow. Code deps are the project modules a stage
# imports (found by walking its imports); configs/${profile}.yaml is a dep of every stage because a profile
# preset can set any key. rl and evaluate run once per rl.algos x rl.methods.
"""
MATRIX_RUN = "${item.algo}-${item.method}"


def _sub(path: str) -> str:
    return path.replace(RUN, MATRIX_RUN)


def stage_entry(stage: Stage) -> dict[str, Any]:
    """The ``stages.<name>`` mapping of ``dvc.yaml`` for one stage."""
    entry: dict[str, Any] = {}
    cmd = f"python -m tasks {stage.name}"
    if stage.matrix:
        entry["matrix"] = {"algo": "${rl.algos}", "method": "${rl.methods}"}
        cmd += " --algo ${item.algo} --method ${item.method}"
    entry["cmd"] = cmd
    entry["deps"] = [*(_sub(d) for d in stage.deps), *stage.code(), "configs/${profile}.yaml"]
    entry["params"] = [*COMMON_PARAMS, *stage.params]
    outs: list[Any] = []
    for o in stage.outs:
        opts = {k: v for k, v in (("persist", o.persist), ("cache", o.cache)) if v != (k == "cache")}
        outs.append({_sub(o.path): opts} if opts else _sub(o.path))
    outs += [{img: {"cache": False}} for img in stage.images]
    if outs:
        entry["outs"] = outs
    if stage.metrics:
        entry["metrics"] = [{_sub(m): {"cache": False}} for m in stage.metrics]
    if stage.plots:
        entry["plots"] = [{_sub(p.path): {"cache": False, "x": p.x, "y": p.y}} for p in stage.plots]
    return entry


def render() -> str:
    """The whole ``dvc.yaml`` text."""
    doc = {
        "vars": ["params.yaml"],
        "stages": {s.name: stage_entry(s) for s in STAGES},
        # PNGs: `dvc plots show` renders them offline (the Vega plots of the CSVs load Vega from a CDN)
        "plots": [img for s in STAGES for img in s.images],
    }
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


def write(path: Path = ROOT / "dvc.yaml") -> Path:
    path.write_text(render())
    return path


def check(path: Path = ROOT / "dvc.yaml") -> str | None:
    """``None`` when ``path`` is what the table generates, else a one-line error."""
    if not path.exists() or path.read_text() != render():
        return f"{path} is not what the stage table generates: run `r2m dvc-yaml` and commit the result"
    return None
