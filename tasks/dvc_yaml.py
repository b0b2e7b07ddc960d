"""``dvc.yaml`` generated from the stage table (:mod:`tasks.stages`): ``r2m dvc-yaml`` writes it, ``--check`` fails
when the committed file differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from r2m.config import Config, load_config
from r2m.rl.methods import METHODS
from tasks.stages import COMMON_PARAMS, ROOT, RUN, STAGES, Stage, get

HEADER = """\
# GENERATED from the stage table in tasks/stages.py and params.yaml's rl.algos x rl.methods by `r2m dvc-yaml`:
# edit those, then rerun it (every stage command refuses to run from a stale dvc.yaml). `dvc repro` reruns what
# changed; `dvc exp run -S rl.steps=80` runs a variant. Each stage runs `python -m tasks <stage>`, the same function
# as the Prefect flow. Code deps are the project modules a stage imports (found by walking its imports);
# configs/${profile}.yaml is a dep of every stage because a profile preset can set any key. rl and evaluate run
# once per <algo>-<method>; ${item.inputs} is what a method needs beyond the vanilla RM (r2m/rl/methods.py: the
# ensemble's RMs, PAR's reference scores), or the vanilla RM again for the methods that need nothing more.
"""
MATRIX_RUN = "${item.algo}-${item.method}"
INPUTS = "${item.inputs}"


def _sub(path: str) -> str:
    return path.replace(RUN, MATRIX_RUN)


def run_inputs(method: str) -> str:
    """The one path a method's RL run reads beyond the common deps: the output of the optional stage it needs,
    else the vanilla RM (already a dep: DVC takes a repeated dep once)."""
    needs = METHODS[method].needs
    if len(needs) > 1:
        raise ValueError(f"method {method!r} needs {needs}: one optional stage per method is supported")
    return get(needs[0]).outs[0].path if needs else "models/rm"


def data_deps(cfg: Config) -> list[str]:
    """The local files a real ``data.source`` is read from (``data.path``, ``data.pairs_path``; a shipped
    ``sample:<name>`` as its file under r2m/data/samples/): deps of the prepare stage. Hub ids are not files."""
    from r2m.data.real import SAMPLE_PREFIX, SAMPLES

    out = []
    for path in (cfg.data.path, cfg.data.pairs_path):
        if path.startswith(SAMPLE_PREFIX):
            out.append((SAMPLES / path[len(SAMPLE_PREFIX) :]).relative_to(ROOT).as_posix())
        elif path and (Path(path).is_absolute() or (ROOT / path).exists()):
            out.append(path)
    return out


def stage_entry(stage: Stage, cfg: Config) -> dict[str, Any]:
    """The ``stages.<name>`` mapping of ``dvc.yaml`` for one stage; a matrix stage is a ``foreach`` over the runs
    of ``cfg`` (``rl@<algo>-<method>``, as DVC names the items)."""
    entry: dict[str, Any] = {}
    cmd = f"python -m tasks {stage.name}"
    deps = [*(_sub(d) for d in stage.deps), *(data_deps(cfg) if stage.name == "prepare" else [])]
    if stage.matrix:
        entry["foreach"] = {
            run: {"algo": a, "method": m, "inputs": run_inputs(m)}
            for run in cfg.run_names()
            for a, m in [run.split("-", 1)]
        }
        cmd += " --algo ${item.algo} --method ${item.method}"
        if stage.name == "rl":
            deps.append(INPUTS)
    body: dict[str, Any] = {"cmd": cmd}
    body["deps"] = [*deps, *stage.code(), "configs/${profile}.yaml"]
    body["params"] = [*COMMON_PARAMS, *stage.params]
    outs: list[Any] = []
    for o in stage.outs:
        opts = {k: v for k, v in (("persist", o.persist), ("cache", o.cache)) if v != (k == "cache")}
        outs.append({_sub(o.path): opts} if opts else _sub(o.path))
    outs += [{img: {"cache": False}} for img in stage.images]
    if outs:
        body["outs"] = outs
    if stage.metrics:
        body["metrics"] = [{_sub(m): {"cache": False}} for m in stage.metrics]
    if stage.plots:
        body["plots"] = [{_sub(p.path): {"cache": False, "x": p.x, "y": p.y}} for p in stage.plots]
    if stage.matrix:
        entry["do"] = body
        return entry
    return body


def render(cfg: Config | None = None) -> str:
    """The whole ``dvc.yaml`` text for ``cfg`` (default: the repository's ``params.yaml``): the stages it needs."""
    cfg = load_config(ROOT / "params.yaml") if cfg is None else cfg
    used = [s for s in STAGES if s.needed(cfg)]
    doc = {
        "vars": ["params.yaml"],
        "stages": {s.name: stage_entry(s, cfg) for s in used},
        # PNGs: `dvc plots show` renders them offline (the Vega plots of the CSVs load Vega from a CDN)
        "plots": [img for s in used for img in s.images],
    }
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


def write(path: Path = ROOT / "dvc.yaml") -> Path:
    path.write_text(render(load_config(path.parent / "params.yaml")))
    return path


def check(path: Path = ROOT / "dvc.yaml", cfg: Config | None = None) -> str | None:
    """``None`` when ``path`` is what the table generates for ``cfg`` (default: the ``params.yaml`` beside it, or
    the repository's), else a one-line error."""
    if cfg is None:
        params = path.parent / "params.yaml"
        cfg = load_config(params if params.exists() else ROOT / "params.yaml")
    if not path.exists() or path.read_text() != render(cfg):
        return (
            f"{path} is not what the stage table and params.yaml's rl.algos x rl.methods generate: run "
            "`r2m dvc-yaml` and commit the result"
        )
    return None
