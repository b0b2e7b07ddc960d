"""Stage ``reward_model``: the vanilla Bradley-Terry reward model -> ``models/rm/`` (the proxy every method is scored
by), the held-out RM -> ``models/rm_heldout/`` (other pairs, seed + ``preferences.heldout_seed_offset``; it selects
checkpoints and nothing trains on it), and ``metrics/reward_model.json``.

The trunk starts from the SFT policy (``reward_model.trunk: sft``) or a named model; with ``train_trunk: false`` the
trunk is frozen and only the score head trains on cached embeddings. Held-out accuracy on ``rm_test`` (strict: ties
are wrong), calibration, and accuracy split by whether the longer response was chosen (the spurious correlate).
"""

from __future__ import annotations

import time
from pathlib import Path

from r2m.config import Config
from r2m.data.io import PAIR_SCHEMA, read_jsonl, write_json
from r2m.evaluation.accuracy import length_split_accuracy, reward_accuracy_report
from r2m.paths import Paths
from r2m.rm_train import count_truncated, load_trunk, score_pairs, train_reward_model


def _train(
    cfg: Config, paths: Paths, train: list[dict], test: list[dict], seed: int, progress: bool, cache: dict | None = None
):
    """Train one RM; ``cache``: text -> embedding of the same frozen trunk (another RM's), reused."""
    rm = load_trunk(cfg, paths, seed=seed)
    if cache is not None and not cfg.reward_model.train_trunk:
        rm.embedding_cache = cache
    t0 = time.perf_counter()
    losses = train_reward_model(rm, train, cfg.reward_model, seed, progress=progress)
    seconds = time.perf_counter() - t0
    ml = cfg.reward_model.max_length
    tr_c, tr_r = score_pairs(rm, train, ml)
    te_c, te_r = score_pairs(rm, test, ml)
    test_report = reward_accuracy_report(te_c, te_r)
    metrics = {
        "train_accuracy": reward_accuracy_report(tr_c, tr_r)["accuracy"],
        "test_accuracy": test_report["accuracy"],
        "test_ece": test_report["ece"],
        "n_train": len(train),
        "n_test": len(test),
        "loss_final": losses[-1] if losses else None,
        "texts_truncated": count_truncated(rm, train, ml),  # RM-train texts read without their start
        **length_split_accuracy(test, te_c, te_r),
    }
    return rm, metrics, seconds


def reward_model(cfg: Config, workdir: str | Path = ".", progress: bool = True) -> dict:
    paths = Paths.of(cfg, workdir)
    train = read_jsonl(paths.data / "rm_train.jsonl", PAIR_SCHEMA, stage_input=True)
    heldout = read_jsonl(paths.data / "rm_heldout.jsonl", PAIR_SCHEMA, stage_input=True)
    test = read_jsonl(paths.data / "rm_test.jsonl", PAIR_SCHEMA, stage_input=True)
    rm, metrics, seconds = _train(cfg, paths, train, test, cfg.seed, progress)
    h_seed = cfg.seed + cfg.preferences.heldout_seed_offset
    # both RMs read the same frozen trunk: the test texts are embedded once
    rm_h, metrics_h, seconds_h = _train(cfg, paths, heldout, test, h_seed, progress, cache=rm.embedding_cache)
    if all("label_agrees_with_gold" in r for r in train):
        metrics["train_label_agreement_with_gold"] = sum(r["label_agrees_with_gold"] for r in train) / len(train)
    metrics["heldout_rm"] = metrics_h
    extra = {"source_trunk": cfg.reward_model.trunk, "train_trunk": cfg.reward_model.train_trunk}
    rm.save(paths.rm, extra=extra)
    rm_h.save(paths.rm_heldout, extra={**extra, "seed": h_seed})
    write_json(paths.metrics / "reward_model.json", metrics)
    return {
        "model": str(paths.rm),
        "metrics": metrics,
        "timings": {"train_seconds": seconds, "heldout_train_seconds": seconds_h},
    }
