"""Stage ``prepare``: the embedded forum-post summarisation task -> ``data/`` (DVC output).

Writes posts.jsonl (every post with its key facts, for the gold judge), sft.jsonl, rm_prompts.jsonl (the prompts of the
reward models' pairs, with their split: rm_train / rm_heldout / rm_test; the ``preferences`` stage samples and labels
them), rl_prompts.jsonl, eval_prompts.jsonl, and ``metrics/prepare.json``. Deterministic by ``seed``.
"""

from __future__ import annotations

from pathlib import Path

from r2m.config import Config
from r2m.data.gold import GoldJudge
from r2m.data.io import write_json, write_jsonl
from r2m.data.task import format_completion, format_prompt, generate_posts
from tasks.common import Paths


def prompt_row(post) -> dict:
    return {"id": post.id, "post_id": post.id, "prompt": format_prompt(post), "reference": post.reference}


def prepare(cfg: Config, workdir: str | Path = ".") -> dict:
    """Generate the splits (disjoint posts per split) and return their paths and counts."""
    if cfg.data.source != "synthetic":
        raise NotImplementedError(
            f"data.source={cfg.data.source!r}: the pipeline's prepare stage builds the embedded task only; "
            "real datasets are read by r2m.data.loaders (tldr, summarize_from_feedback, ultrafeedback_binarized)"
        )
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
