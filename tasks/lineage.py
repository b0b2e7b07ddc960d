"""What an MLflow stage run records about where its results came from: the code's git state, the content of each
declared input, the hashes ``dvc.lock`` holds for them, and the stage's cache key.

Tags (all strings):

- ``r2m.git.commit`` / ``r2m.git.dirty``: ``HEAD`` of the checkout the code runs from and whether tracked files
  differ from it (``unknown`` outside a git checkout);
- ``r2m.inputs.sha256``: the stage's content key (:func:`tasks.caching.input_key`: declared config, input bytes,
  code bytes), the same key the Prefect flow caches on;
- ``r2m.input.<path>``: sha256 of each declared input (file bytes, or a directory's names and bytes);
- ``r2m.dvc.<path>``: the md5 ``dvc.lock`` records for that input, when the working directory has a ``dvc.lock``
  that lists it (what ``dvc pull`` restores).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from r2m.config import Config
from tasks import caching, stages

UNKNOWN = "unknown"


def _git(root: Path, *args: str) -> str | None:
    try:
        p = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


# what the pipeline itself writes into git-tracked paths (DVC metrics and plots with cache: false, the lock file): a
# run's own outputs do not make the code that produced them dirty
OUTPUT_PATHS = ("metrics", "plots", "dvc.lock")


def git_state(root: Path) -> dict[str, str]:
    """``{"r2m.git.commit": sha, "r2m.git.dirty": "true" | "false"}`` of the checkout at ``root``; dirty = a tracked
    file other than the pipeline's outputs (:data:`OUTPUT_PATHS`) differs from the commit."""
    commit = _git(root, "rev-parse", "HEAD")
    excludes = [f":(exclude){p}" for p in OUTPUT_PATHS]
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *excludes) if commit else None
    dirty = UNKNOWN if status is None else str(bool(status)).lower()
    return {"r2m.git.commit": commit or UNKNOWN, "r2m.git.dirty": dirty}


def dvc_lock_hashes(workdir: Path) -> dict[str, str]:
    """``{path: md5}`` of every output and dependency ``workdir/dvc.lock`` records (empty without one)."""
    lock = workdir / "dvc.lock"
    if not lock.is_file():
        return {}
    doc = yaml.safe_load(lock.read_text()) or {}
    out: dict[str, str] = {}
    for entry in (doc.get("stages") or {}).values():
        for item in [*(entry.get("outs") or []), *(entry.get("deps") or [])]:
            if isinstance(item, dict) and "path" in item and "md5" in item:
                out.setdefault(str(item["path"]), str(item["md5"]))
    return out


def stage_tags(cfg: Config, stage: stages.Stage, run: str | None, workdir: str | Path) -> dict[str, str]:
    """The input tags of one stage run (module docstring; the git tags are added to every run by
    :func:`tasks.common.tracked`), computed before it runs."""
    wd = Path(workdir).resolve()
    inputs = caching.input_digests(stage, run, wd)
    tags = {"r2m.inputs.sha256": caching.input_key(cfg, stage, run, wd, True, inputs)}
    lock = dvc_lock_hashes(wd)
    for rel, digest in inputs.items():
        tags[f"r2m.input.{rel}"] = digest
        if rel in lock:
            tags[f"r2m.dvc.{rel}"] = lock[rel]
    return tags
