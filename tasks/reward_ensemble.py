"""Stage ``reward_ensemble``: the reward models of the ensemble methods and of WARM -> ``models/rm_ensemble/``.

- ``member_<i>/`` (i < ``methods.ensemble.k``): a reward model like the vanilla one (same trunk source, same
  training settings), with its own seed for the head's initialisation and the batch order, trained on its own
  bootstrap resample of the RM-train pairs (Coste et al. 2024);
- ``warm/``: WARM (Rame et al. 2024), the weight average of ``methods.ensemble.warm_members`` reward models that all
  start from the vanilla RM's initialisation (its seed) and differ in their bootstrap resample and batch order;
- ``normalisation.json``: each member's mean and std on the RM-train responses (chosen and rejected), by which the
  ensemble methods normalise before combining;
- ``metrics/reward_ensemble.json``: RM-test accuracy of every member, of WARM and of each combination.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from r2m.config import Config
from r2m.data.io import PAIR_SCHEMA, read_jsonl, write_json
from r2m.evaluation.accuracy import reward_accuracy_report
from r2m.paths import Paths
from r2m.rl.peers import average_weights, bootstrap, combine, normalise_stats
from r2m.rm_train import load_trunk, score_pairs, train_reward_model

MEMBER_SEED = 1000  # member i: seed + MEMBER_SEED + i (initialisation, bootstrap, batch order)
WARM_SEED = 2000  # WARM member j: initialisation of the vanilla RM (seed), bootstrap and order seed + WARM_SEED + j


def _responses(rows: list[dict]) -> list[str]:
    return [r["prompt"] + r["chosen"] for r in rows] + [r["prompt"] + r["rejected"] for r in rows]


def reward_ensemble(cfg: Config, workdir: str | Path = ".", progress: bool = True) -> dict:
    paths = Paths.of(cfg, workdir)
    train = read_jsonl(paths.data / "rm_train.jsonl", PAIR_SCHEMA)
    test = read_jsonl(paths.data / "rm_test.jsonl", PAIR_SCHEMA)
    e, ml = cfg.methods.ensemble, cfg.reward_model.max_length
    out = paths.models / "rm_ensemble"
    t0 = time.perf_counter()
    stats, members, test_scores = [], [], []
    for i in range(e.k):
        s = cfg.seed + MEMBER_SEED + i
        rm = load_trunk(cfg, paths, seed=s)
        train_reward_model(rm, bootstrap(train, s), cfg.reward_model, s, progress=progress)
        mu, sd = normalise_stats(rm.score_texts(_responses(train), max_length=ml).float())
        c, r = score_pairs(rm, test, ml)
        test_scores.append(((torch.tensor(c) - mu) / sd, (torch.tensor(r) - mu) / sd))
        members.append({"seed": s, "test_accuracy": reward_accuracy_report(c, r)["accuracy"], "mean": mu, "std": sd})
        stats.append({"mean": mu, "std": sd})
        rm.save(out / f"member_{i}", extra={"seed": s, "bootstrap_seed": s})
    combos = {}
    for how in ("mean", "min", "uwo"):
        chosen = combine(torch.stack([c for c, _ in test_scores]), how, e.uwo_lambda)
        rejected = combine(torch.stack([r for _, r in test_scores]), how, e.uwo_lambda)
        combos[how] = reward_accuracy_report(chosen.tolist(), rejected.tolist())["accuracy"]
    warm = load_trunk(cfg, paths, seed=cfg.seed)
    fine_tuned = []
    for j in range(e.warm_members):
        s = cfg.seed + WARM_SEED + j
        rm = load_trunk(cfg, paths, seed=cfg.seed)  # one initialisation for all: the vanilla RM's
        train_reward_model(rm, bootstrap(train, s), cfg.reward_model, s, progress=progress)
        fine_tuned.append(rm)
    warm.load_state_dict(average_weights(fine_tuned))
    c, r = score_pairs(warm, test, ml)
    warm_acc = reward_accuracy_report(c, r)["accuracy"]
    warm_members = [reward_accuracy_report(*score_pairs(m, test, ml))["accuracy"] for m in fine_tuned]
    warm.save(out / "warm", extra={"seed": cfg.seed, "averaged": e.warm_members})
    write_json(out / "normalisation.json", {"members": stats})
    metrics = {
        "members": members,
        "ensemble_test_accuracy": combos,
        "warm_test_accuracy": warm_acc,
        "warm_member_test_accuracy": warm_members,
        "n_train": len(train),
        "n_test": len(test),
    }
    write_json(paths.metrics / "reward_ensemble.json", metrics)
    return {"model": str(out), "metrics": metrics, "timings": {"seconds": time.perf_counter() - t0}}
