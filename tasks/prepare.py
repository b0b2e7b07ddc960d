"""Stage ``prepare``: the task's splits -> ``data/`` (DVC output), the same files for every ``data.source``.

Writes posts.jsonl, sft.jsonl, rm_prompts.jsonl (the prompts of the reward models' pairs, with their split: rm_train /
rm_heldout / rm_test), rl_prompts.jsonl, eval_prompts.jsonl, and ``metrics/prepare.json``. Deterministic by ``seed``.

- ``synthetic``: the embedded forum-post task; posts.jsonl holds every post with its key facts (the gold judge's),
  and the ``preferences`` stage samples and gold-labels the RM prompts' pairs.
- a real source (:mod:`r2m.data.real`): posts.jsonl holds every prompt row with its ``source`` (there is no gold
  judge), and rm_prompts.jsonl carries the dataset's own pairs (``chosen`` / ``rejected``), which ``preferences``
  passes on as they are.
"""

from __future__ import annotations

from pathlib import Path

from r2m.config import Config
from r2m.data.gold import GoldJudge
from r2m.data.io import write_json, write_jsonl
from r2m.data.task import format_completion, format_prompt, generate_posts
from r2m.paths import Paths


def prompt_row(post) -> dict:
    return {"id": post.id, "post_id": post.id, "prompt": format_prompt(post), "reference": post.reference}


def prepare(cfg: Config, workdir: str | Path = ".") -> dict:
    """Write the splits (disjoint prompts per split) and return their paths and counts."""
    if cfg.data.source != "synthetic":
        return prepare_real(cfg, workdir)
    paths = Paths.of(cfg, workdir)
    d = cfg.data
    sizes = {
        "sft": d.n_sft,
        "rm_train": d.n_rm_train,
        "rm_heldout": d.n_rm_heldout,
        "rm_test": d.n_rm_test,
        "rl_prompts": d.n_rl_prompts,
        "eval_prompts": d.n_eval_prompts,
    }
    posts = generate_posts(sum(sizes.values()), seed=cfg.seed)
    splits, start = {}, 0
    for name, n in sizes.items():
        splits[name] = posts[start : start + n]
        start += n
    judge = GoldJudge()
    out = paths.data
    counts = {"posts": write_jsonl(out / "posts.jsonl", (p.to_dict() for p in posts))}
    counts["sft"] = write_jsonl(
        out / "sft.jsonl",
        ({"id": p.id, "prompt": format_prompt(p), "completion": format_completion(p.reference)} for p in splits["sft"]),
    )
    rm_rows = ({**prompt_row(p), "split": name} for name in ("rm_train", "rm_heldout", "rm_test") for p in splits[name])
    counts["rm_prompts"] = write_jsonl(out / "rm_prompts.jsonl", rm_rows)
    for name in ("rl_prompts", "eval_prompts"):
        counts[name] = write_jsonl(out / f"{name}.jsonl", (prompt_row(p) for p in splits[name]))
    ref_gold = [judge.score(p, p.reference) for p in splits["eval_prompts"]]
    metrics = {"counts": counts, "reference_gold_mean": sum(ref_gold) / max(1, len(ref_gold))}
    write_json(paths.metrics / "prepare.json", metrics)
    return {"data": str(out), "metrics": metrics}


def _load(
    kind: str, path: str, split: str, workdir: str | Path, *, skip_identical: bool, stats: dict[str, int]
) -> tuple[list[dict], str]:
    from r2m.data.loaders import load_named
    from r2m.data.real import resolve_source

    source = resolve_source(path, workdir)
    rows = load_named(kind, source, split or None, skip_identical=skip_identical, stats=stats)
    return rows, path if not split else f"{path}[{split}]"


def prepare_real(cfg: Config, workdir: str | Path = ".") -> dict:
    """A real dataset (``data.source`` / ``path`` / ``split``, pairs from ``data.pairs_*`` when set) as the splits.
    Everything is read and checked before a file is written, so a bad source leaves ``data/`` as it was."""
    from r2m.data.real import real_task

    d = cfg.data
    stats: dict[str, dict[str, int]] = {"source": {}, "pairs_source": {}}
    skip = d.skip_identical_pairs
    rows, label = _load(d.source, d.path, d.split, workdir, skip_identical=skip, stats=stats["source"])
    pair_rows, pair_label = (
        _load(d.pairs_source, d.pairs_path, d.pairs_split, workdir, skip_identical=skip, stats=stats["pairs_source"])
        if d.pairs_source
        else (None, "")
    )
    task = real_task(d, rows, pair_rows, cfg.seed, (label, pair_label))
    paths = Paths.of(cfg, workdir)
    out = paths.data
    prompt_rows = [*task.rl_prompts, *task.eval_prompts]
    rm_rows = [{**r, "split": split} for split, pairs in task.pairs.items() for r in pairs]
    items = (
        {"id": r["id"], "prompt": r["prompt"], "reference": ref, "source": src}
        for r, ref, src in (
            *((r, r["completion"].strip(), d.source) for r in task.sft),
            *((r, r["reference"], d.source) for r in prompt_rows),
            *((r, r["chosen"].strip(), d.pairs_source or d.source) for r in rm_rows),
        )
    )
    counts = {"posts": write_jsonl(out / "posts.jsonl", items)}
    counts["sft"] = write_jsonl(out / "sft.jsonl", task.sft)
    counts["rm_prompts"] = write_jsonl(out / "rm_prompts.jsonl", rm_rows)
    counts["rl_prompts"] = write_jsonl(out / "rl_prompts.jsonl", task.rl_prompts)
    counts["eval_prompts"] = write_jsonl(out / "eval_prompts.jsonl", task.eval_prompts)
    metrics = {
        "counts": counts,
        "source": {
            "kind": d.source,
            "path": label,
            **({"pairs_kind": d.pairs_source, "pairs_path": pair_label} if d.pairs_source else {}),
        },
        **task.info,
        "read": {k: v for k, v in stats.items() if v},  # rows read and skipped, per source
    }
    write_json(paths.metrics / "prepare.json", metrics)
    return {"data": str(out), "metrics": metrics}
