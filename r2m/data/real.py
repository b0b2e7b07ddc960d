"""A real dataset as the pipeline's splits: the files ``prepare`` writes for every ``data.source``.

The embedded task (:mod:`r2m.data.task`) generates posts; a real source is read by :mod:`r2m.data.loaders` and cut
into the same splits, by distinct prompt (a prompt never lands in two splits), in a seeded random order:

- ``sft``: prompt + completion (a completion source: its completion; a pair source: the chosen response);
- ``rm_train`` / ``rm_heldout`` / ``rm_test``: one preference pair per prompt, with the dataset's own (human)
  label, from ``data.pairs_source`` when set, else from ``data.source``; prompts that are also RL or eval prompts
  are left out of them (counted);
- ``rl_prompts`` / ``eval_prompts``: prompt rows whose ``reference`` is the completion (or the chosen response).

Split sizes are ``data.n_*``: a source with fewer distinct prompts than they need is an error naming the source
and the numbers, never a silently smaller split.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from r2m.config import PAIR_SOURCES, DataConfig
from r2m.data.io import DatasetError

SAMPLES = Path(__file__).parent / "samples"  # real-data samples shipped with the package (data.path: sample:<name>)
SAMPLE_PREFIX = "sample:"
PROMPT_SPLITS = ("sft", "rl_prompts", "eval_prompts")
PAIR_SPLITS = ("rm_train", "rm_heldout", "rm_test")


def resolve_source(path: str, workdir: str | Path) -> str:
    """``data.path`` as the loaders take it: ``sample:<name>`` -> the shipped file, a relative local path -> under
    ``workdir`` when it exists there; anything else (absolute path, hub id) unchanged."""
    if path.startswith(SAMPLE_PREFIX):
        name = path[len(SAMPLE_PREFIX) :]
        target = SAMPLES / name
        if not name or not target.is_file():
            have = ", ".join(sorted(p.name for p in SAMPLES.glob("*.jsonl"))) or "none"
            raise DatasetError(f"data.path={path}", f"no such shipped sample (samples in {SAMPLES}: {have})")
        return str(target)
    local = Path(workdir) / path
    return str(local) if not Path(path).is_absolute() and local.exists() else path


@dataclass
class RealTask:
    """The rows of every split (``prompt_rows``: sft / rl_prompts / eval_prompts; ``pairs``: rm_*), and counts."""

    sft: list[dict]
    rl_prompts: list[dict]
    eval_prompts: list[dict]
    pairs: dict[str, list[dict]]
    info: dict = field(default_factory=dict)


def _by_prompt(rows: Sequence[dict]) -> dict[str, dict]:
    """The first row of each distinct prompt, in source order."""
    out: dict[str, dict] = {}
    for r in rows:
        out.setdefault(r["prompt"], r)
    return out


def _shuffled(groups: dict[str, dict], seed: int) -> list[dict]:
    rows = list(groups.values())
    random.Random(seed).shuffle(rows)
    return rows


def _take(rows: list[dict], sizes: dict[str, int], label: str, what: str) -> dict[str, list[dict]]:
    """Consecutive slices of ``rows`` of the given sizes; too few rows is a :class:`DatasetError`."""
    need = sum(sizes.values())
    if len(rows) < need:
        named = " + ".join(f"data.n_{k}" for k in sizes)
        raise DatasetError(
            label, f"{len(rows)} distinct prompts, but {named} need {need} ({what}): lower them or add data"
        )
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = rows[start : start + n]
        start += n
    return out


def _target(row: dict) -> str:
    """The response a prompt row trains on / is compared with: a completion, or a pair's chosen response."""
    return row["completion"] if "completion" in row else row["chosen"]


def _pair(row: dict) -> dict:
    keep = ("id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected")
    return {k: row[k] for k in keep if k in row}


def real_task(
    d: DataConfig, rows: Sequence[dict], pair_rows: Sequence[dict] | None, seed: int, labels: tuple[str, str]
) -> RealTask:
    """Cut loaded rows into the pipeline's splits (see the module docstring).

    Args:
        d: the data config (its ``n_*`` sizes, ``source`` and ``pairs_source``).
        rows: the rows of ``data.source`` (``prompt`` + ``completion``, or ``prompt`` / ``chosen`` / ``rejected``).
        pair_rows: the rows of ``data.pairs_source`` (``None`` without one: the pairs come from ``rows``).
        seed: orders the distinct prompts before they are cut.
        labels: the two sources' names for error messages (``pair_rows``' label second).
    """
    prompt_sizes = {"sft": d.n_sft, "rl_prompts": d.n_rl_prompts, "eval_prompts": d.n_eval_prompts}
    pair_sizes = {"rm_train": d.n_rm_train, "rm_heldout": d.n_rm_heldout, "rm_test": d.n_rm_test}
    groups = _by_prompt(rows)
    info: dict = {"source_rows": len(rows), "source_prompts": len(groups)}
    if pair_rows is None:
        if d.source not in PAIR_SOURCES:
            raise DatasetError(labels[0], f"data.source={d.source} holds no pairs; set data.pairs_source")
        cut = _take(_shuffled(groups, seed), {**prompt_sizes, **pair_sizes}, labels[0], "SFT, RL, eval and RM prompts")
        pairs = {k: [_pair(r) for r in cut[k]] for k in PAIR_SPLITS}
    else:
        cut = _take(_shuffled(groups, seed), prompt_sizes, labels[0], "SFT, RL and eval prompts")
        taken = {r["prompt"] for k in ("rl_prompts", "eval_prompts") for r in cut[k]}
        pair_groups = _by_prompt(pair_rows)
        free = {p: r for p, r in pair_groups.items() if p not in taken}
        info.update(
            pairs_rows=len(pair_rows),
            pairs_prompts=len(pair_groups),
            pairs_dropped_overlap=len(pair_groups) - len(free),
        )
        pc = _take(_shuffled(free, seed + 1), pair_sizes, labels[1], "RM prompts not among the RL / eval prompts")
        pairs = {k: [_pair(r) for r in pc[k]] for k in PAIR_SPLITS}
    sft = [{"id": r["id"], "prompt": r["prompt"], "completion": _target(r)} for r in cut["sft"]]
    prompts = {
        k: [{"id": r["id"], "prompt": r["prompt"], "reference": _target(r).strip()} for r in cut[k]]
        for k in ("rl_prompts", "eval_prompts")
    }
    return RealTask(sft, prompts["rl_prompts"], prompts["eval_prompts"], pairs, info)
