"""The completions every comparison judges: a policy's eval generations and the named generation sources.

Generation sources (``--a`` / ``--b`` of ``r2m judge``):

- ``reference``: the eval prompts' reference summaries;
- ``sft``: the SFT policy's greedy generations (written by the sft stage);
- ``<algo>-<method>``: a run's final-policy generations (written by its evaluate stage);
- ``<algo>-<method>@round_<k>``: that run's round-k checkpoint, generated here (greedy, ``evaluate.*`` settings);
- a ``.jsonl`` file with ``id`` and ``completion`` per eval prompt (e.g. another system's outputs).
"""

from __future__ import annotations

import re
from pathlib import Path

from r2m.config import Config
from r2m.data.io import DatasetError, read_jsonl
from r2m.generation import generate
from r2m.models.builders import load_causal_lm
from r2m.paths import SFT_GENERATIONS, Paths
from r2m.prompts import log_truncated, render_prompts_counted

GENERATION_SCHEMA: dict[str, type] = {"id": str, "completion": str}
_ROUND = re.compile(r"^(?P<run>[a-z]+-[a-z0-9_]+)@(?P<round>round_\d+|final)$")


def eval_generations(model, tok, rows: list[dict], cfg: Config, progress: bool = False) -> list[str]:
    """The policy's completions of the eval prompts ``rows`` (``evaluate.*`` decoding), the ones every win rate uses."""
    prompts, truncated = render_prompts_counted(tok, [r["prompt"] for r in rows], cfg.policy)
    log_truncated(truncated, len(rows), "eval prompts")
    return generate(
        model,
        tok,
        prompts,
        cfg.evaluate.max_new_tokens,
        greedy=cfg.evaluate.greedy,
        temperature=cfg.rl.temperature,
        seed=cfg.seed,
        progress=progress,
    )


def eval_rows(cfg: Config, paths: Paths) -> list[dict]:
    """The eval prompts, the first ``judge.max_items`` of them when that is set."""
    rows = read_jsonl(paths.data / "eval_prompts.jsonl")
    return rows[: cfg.judge.max_items] if cfg.judge.max_items > 0 else rows


def completions_by_id(path: Path, rows: list[dict]) -> list[str]:
    """Completions from a JSONL of ``{"id", "completion"}`` rows, aligned with ``rows`` (every id must be there).

    A missing file or id is a :class:`DatasetError` naming the file (a bad row: :class:`DataValidationError`)."""
    if not path.exists():
        raise DatasetError(path, "not found")
    got = {g["id"]: g["completion"] for g in read_jsonl(path, GENERATION_SCHEMA, allow_empty_str=True)}
    missing = [r["id"] for r in rows if r["id"] not in got]
    if missing:
        raise DatasetError(path, f"no completion for {len(missing)} eval prompt id(s), e.g. {missing[:3]} (field 'id')")
    return [got[r["id"]] for r in rows]


def generate_from(cfg: Config, policy_dir: Path, rows: list[dict]) -> list[str]:
    """Eval generations of a saved policy checkpoint (e.g. an RL round)."""
    if not policy_dir.exists():
        raise DatasetError(policy_dir, "no such checkpoint")
    model, tok = load_causal_lm(policy_dir)
    return eval_generations(model, tok, rows, cfg)


def generations(cfg: Config, paths: Paths, source: str, rows: list[dict]) -> list[str]:
    """Completions of ``source`` (see the module docstring) for ``rows``, in order."""
    if source == "reference":
        return [" " + r["reference"] for r in rows]
    if source == "sft":
        return completions_by_id(paths.sft / SFT_GENERATIONS, rows)
    if source.endswith(".jsonl"):
        return completions_by_id(Path(source), rows)
    m = _ROUND.match(source)
    if m:
        return generate_from(cfg, paths.rl_run(m["run"]) / m["round"] / "policy", rows)
    path = paths.metrics / "eval" / f"{source}_generations.jsonl"
    if not path.exists():
        raise DatasetError(
            path,
            f"no generations for {source!r}; run its evaluate stage, or use reference, sft, "
            "<algo>-<method>@round_<k> or a .jsonl file",
        )
    return completions_by_id(path, rows)
