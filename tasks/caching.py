"""Content-keyed caching of the flow's stage tasks.

A stage task's cache key (:func:`input_key`) hashes what the stage table says it reads: the declared config (its
sections and keys plus the common ones), the bytes of its input files and directories, and the bytes of the code
it runs, together with the run name, the working directory and whether MLflow is on. An identical rerun of the flow
is then a cache hit for every stage, and changing one key reruns exactly the stages that declare it and those
downstream whose inputs change.

A hit is trusted only while the stage's outputs are still the ones it wrote: the task returns the digest of its
outputs (:func:`outputs_digest`), and the flow reruns the stage (refreshing the cache) when the files on disk no
longer match it, e.g. after ``rm -r models/``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from r2m.config import Config
from tasks import stages
from tasks.common import REGISTRY_FILE, tracking_uri

MISSING = "missing"
# what a stage writes besides its DVC outputs: ``register``'s record of the versions it made
EXTRA_OUTPUTS = {"register": (REGISTRY_FILE,)}


def path_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a directory's files (relative name and bytes, in sorted order);
    :data:`MISSING` when the path does not exist."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if not path.is_dir():
        return MISSING
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _expand(paths: tuple[str, ...], run: str | None) -> list[str]:
    return [p.replace(stages.RUN, run) if run else p for p in paths]


def stage_inputs(stage: stages.Stage, run: str | None) -> list[str]:
    """The stage's declared input paths (``{run}`` filled in), relative to the working directory."""
    return _expand(stage.deps, run)


def stage_outputs(stage: stages.Stage, run: str | None) -> list[str]:
    """Everything the stage writes: outs, metrics files, plot CSVs and PNG plots (``{run}`` filled in)."""
    written = (*(o.path for o in stage.outs), *stage.metrics, *(p.path for p in stage.plots), *stage.images)
    written += EXTRA_OUTPUTS.get(stage.name, ())
    return _expand(written, run)


def declared_config(cfg: Config, stage: stages.Stage) -> dict:
    """The config values the stage may read: its declared sections / keys and the common params."""
    d = cfg.to_dict()
    return {**{k: d[k] for k in stages.COMMON_PARAMS}, **stages.declared_params(cfg, stage)}


def input_digests(stage: stages.Stage, run: str | None, workdir: str | Path) -> dict[str, str]:
    """``{path: path_digest}`` of the stage's declared inputs in ``workdir``."""
    wd = Path(workdir).resolve()
    return {p: path_digest(wd / p) for p in stage_inputs(stage, run)}


def input_key(
    cfg: Config,
    stage: stages.Stage,
    run: str | None,
    workdir: str | Path,
    mlflow: bool,
    inputs: dict[str, str] | None = None,
) -> str:
    """The cache key of one stage run: sha256 over its declared config, input bytes and code bytes (hex).
    ``inputs``: :func:`input_digests`, when the caller has them already."""
    wd = Path(workdir).resolve()
    doc = {
        "stage": stage.name,
        "run": run,
        "workdir": str(wd),
        "mlflow": tracking_uri(cfg, wd) if mlflow else None,  # a run logged elsewhere is another run
        "config": declared_config(cfg, stage),
        "inputs": input_digests(stage, run, wd) if inputs is None else inputs,
        "code": {p: path_digest(stages.ROOT / p) for p in stage.code()},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def outputs_digest(stage: stages.Stage, run: str | None, workdir: str | Path) -> str:
    """sha256 over the digests of everything the stage writes, in its working directory (hex)."""
    wd = Path(workdir)
    parts = {p: path_digest(wd / p) for p in stage_outputs(stage, run)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
