"""A stage's outputs as one transaction: a stage that fails (or is killed) leaves the outputs of its last finished run
exactly as they were.

Before a stage runs, :func:`transaction` moves its declared outputs (the stage table's ``outs``, ``metrics``,
``plots`` and ``images``; not the ``persist`` ones, which the stage resumes from itself: the RL run directory) into
``<workdir>/.r2m-backup/<stage label>/`` by renaming (no copy, whatever their size) and records which existed in a
manifest. The stage then writes from scratch, as under ``dvc repro`` (which deletes a stage's outputs before it runs
it). It ends in one of three ways:

- it finishes: the backup is deleted;
- it raises: what it wrote to its outputs is removed and the backup is moved back;
- it is killed: the backup stays, and the next run of the same stage moves it back before anything else.

Restoring is idempotent (the manifest says which outputs existed; one already moved back is kept), so a kill while
restoring is repaired by the next run as well.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from tasks.stages import RUN, Stage

BACKUP_DIR = ".r2m-backup"
MANIFEST = "manifest.json"  # written last: a backup without it was interrupted before any output moved
log = logging.getLogger("r2m")


def declared_outputs(stage: Stage, run: str | None) -> list[str]:
    """The stage's outputs it rewrites on every run (relative to the work directory; ``{run}`` filled in)."""
    paths = [o.path for o in stage.outs if not o.persist]
    paths += [*stage.metrics, *(p.path for p in stage.plots), *stage.images]
    return [p.replace(RUN, run or "") for p in paths]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def restore(workdir: Path, root: Path) -> None:
    """Put the outputs recorded in ``root``'s manifest back as they were; delete the backup (nothing to do when it
    is gone: restored already)."""
    if not (root / MANIFEST).exists():
        return
    manifest = json.loads((root / MANIFEST).read_text())
    for rel in manifest["outputs"]:
        saved, out = root / "files" / rel, workdir / rel
        if rel in manifest["existed"]:
            if saved.exists() or saved.is_symlink():  # not moved back yet
                _remove(out)
                out.parent.mkdir(parents=True, exist_ok=True)
                os.replace(saved, out)
        else:
            _remove(out)  # written by the failed run: there was nothing before it
    (root / MANIFEST).unlink()
    _drop(root)


def _drop(root: Path) -> None:
    """Delete the backup ``root`` (and the backup folder once it holds no other stage's)."""
    shutil.rmtree(root)
    with contextlib.suppress(OSError):
        root.parent.rmdir()


@contextlib.contextmanager
def transaction(stage: Stage, run: str | None, workdir: str | Path, label: str) -> Iterator[None]:
    """Run the block with the stage's outputs backed up (see the module docstring)."""
    workdir = Path(workdir)
    root = workdir / BACKUP_DIR / label
    if (root / MANIFEST).exists():
        log.warning("%s: the last run of %s did not finish; putting its previous outputs back first", workdir, label)
        restore(workdir, root)
    elif root.exists():
        shutil.rmtree(root)  # interrupted before the manifest: no output had been moved
    outputs = declared_outputs(stage, run)
    existed = [rel for rel in outputs if (workdir / rel).exists() or (workdir / rel).is_symlink()]
    (root / "files").mkdir(parents=True)
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"outputs": outputs, "existed": existed}))
    os.replace(tmp, root / MANIFEST)
    for rel in existed:
        saved = root / "files" / rel
        saved.parent.mkdir(parents=True, exist_ok=True)
        os.replace(workdir / rel, saved)
    try:
        yield
    except BaseException:
        restore(workdir, root)
        raise
    _drop(root)
