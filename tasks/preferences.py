"""Stage ``preferences``: the reward models' pairs -> ``data/rm_train.jsonl``, ``rm_heldout.jsonl``, ``rm_test.jsonl``.

Two samples of the SFT policy per RM prompt (the RL rollout settings: ``rl.temperature``, ``rl.max_completion_length``),
ordered by the gold judge. Train and held-out labels are flipped with probability ``preferences.label_noise`` (flips
drawn with different seeds); test labels are the gold ordering itself, so RM accuracy is measured against the truth.
A share ``preferences.edit_fraction`` of train / held-out posts gives an edit pair of the reference instead.
Writes ``metrics/preferences.json`` (pairs per split, ties dropped, label agreement, the length correlate).

A real dataset's pairs (``chosen`` / ``rejected`` in ``rm_prompts.jsonl``, see the prepare stage) carry their human
labels: they are passed on as they are, with no sampling, no gold judge and no label noise.
"""

from __future__ import annotations

from pathlib import Path

from r2m.config import Config
from r2m.data.io import PAIR_SCHEMA, PROMPT_SCHEMA, read_jsonl, write_json, write_jsonl
from r2m.data.policy_pairs import mixed_pairs
from r2m.data.preferences import pair_stats
from r2m.generation import generate
from r2m.judges.gold import load_gold
from r2m.models.builders import load_causal_lm
from r2m.paths import Paths
from r2m.prompts import render_prompts

SPLITS = ("rm_train", "rm_heldout", "rm_test")
RM_PROMPT_SCHEMA = {**PROMPT_SCHEMA, "post_id": str, "split": str}
REAL_PAIR_SCHEMA = {**PAIR_SCHEMA, "split": str}


def _check_splits(path: Path, rows: list[dict]) -> None:
    unknown = sorted({r["split"] for r in rows} - set(SPLITS))
    if unknown:
        raise ValueError(f"{path}: unknown split(s) {unknown} (field 'split'; valid {SPLITS})")


def dataset_pairs(cfg: Config, paths: Paths) -> dict:
    """A real dataset's pairs, split as the prepare stage assigned them (no labelling)."""
    source = paths.data / "rm_prompts.jsonl"
    rows = read_jsonl(source, REAL_PAIR_SCHEMA)
    _check_splits(source, rows)
    metrics: dict = {"labels": "dataset", "label_noise": None}
    written = {}
    for split in SPLITS:
        pairs = [{k: v for k, v in r.items() if k != "split"} for r in rows if r["split"] == split]
        if not pairs:
            raise ValueError(f"{source}: no {split} pairs (data.n_{split} is 0?)")
        written[split] = pairs
        lc = [len(p["chosen"].split()) > len(p["rejected"].split()) for p in pairs]
        metrics[split] = {"n": float(len(pairs)), "longer_chosen": sum(lc) / len(lc)}
    for split, pairs in written.items():
        write_jsonl(paths.data / f"{split}.jsonl", pairs)
    write_json(paths.metrics / "preferences.json", metrics)
    return {"metrics": metrics}


def preferences(cfg: Config, workdir: str | Path = ".", progress: bool = True) -> dict:
    paths = Paths.of(cfg, workdir)
    posts, gold_fn = load_gold(paths)
    if gold_fn is None:
        return dataset_pairs(cfg, paths)
    rows = read_jsonl(paths.data / "rm_prompts.jsonl", RM_PROMPT_SCHEMA)
    _check_splits(paths.data / "rm_prompts.jsonl", rows)
    model, tok = load_causal_lm(paths.sft)
    prompts = render_prompts(tok, [r["prompt"] for r in rows for _ in range(2)], cfg.policy)
    texts = generate(
        model,
        tok,
        prompts,
        cfg.rl.max_completion_length,
        greedy=False,
        temperature=cfg.rl.temperature,
        batch_size=64,
        seed=cfg.seed,
        progress=progress,
    )
    samples = list(zip(texts[0::2], texts[1::2], strict=True))
    ids = [r["post_id"] for r in rows]
    g_a, g_b = gold_fn(ids, texts[0::2]), gold_fn(ids, texts[1::2])
    gold = list(zip(g_a, g_b, strict=True))
    p = cfg.preferences
    setting = {  # (label noise, edit fraction, seed of flips and edits) per split
        "rm_train": (p.label_noise, p.edit_fraction, cfg.seed),
        "rm_heldout": (p.label_noise, p.edit_fraction, cfg.seed + p.heldout_seed_offset),
        "rm_test": (0.0, 0.0, cfg.seed + 2 * p.heldout_seed_offset + 1),
    }
    metrics: dict = {"label_noise": p.label_noise, "edit_fraction": p.edit_fraction}
    written = {}
    for split, (noise, edit_fraction, seed) in setting.items():
        idx = [i for i, r in enumerate(rows) if r["split"] == split]
        pairs, ties = mixed_pairs(
            [rows[i] for i in idx],
            posts,
            [samples[i] for i in idx],
            [gold[i] for i in idx],
            noise,
            edit_fraction,
            seed * 7919 + 17,
        )
        if not pairs:
            raise ValueError(f"preferences: no pairs for {split} (every pair tied under gold, or no {split} prompts)")
        written[split] = pairs
        metrics[split] = {**pair_stats(pairs), "ties_dropped": ties}
    for split, pairs in written.items():
        write_jsonl(paths.data / f"{split}.jsonl", pairs)
    metrics["sft_sample_gold_mean"] = (sum(g_a) + sum(g_b)) / (2 * len(rows))
    write_json(paths.metrics / "preferences.json", metrics)
    return {"metrics": metrics}
