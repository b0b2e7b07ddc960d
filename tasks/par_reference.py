"""Stage ``par_reference``: PAR's reference scores -> ``models/par_reference.jsonl``.

For every RL prompt, ``methods.par.n_refs`` responses sampled from the SFT reference (``rl.temperature``,
``rl.max_completion_length``, seeded, in file order) and the mean vanilla-RM score of them, the centre of PAR's
reward sigmoid(r(x, y) - r_ref(x)) (Fu et al. 2025). Made once for the SFT policy and the RM: every PAR run (each
algorithm and seed) reads the same file.
"""

from __future__ import annotations

import time
from pathlib import Path

from r2m.config import Config
from r2m.data.io import PROMPT_SCHEMA, read_jsonl, write_json, write_jsonl
from r2m.models.builders import load_causal_lm
from r2m.models.reward_model import RewardModel
from r2m.paths import Paths
from r2m.prompts import render_prompts
from r2m.rl.peers import reference_scores


def par_reference(cfg: Config, workdir: str | Path = ".", progress: bool = True) -> dict:
    paths = Paths.of(cfg, workdir)
    rows = read_jsonl(paths.data / "rl_prompts.jsonl", PROMPT_SCHEMA)
    model, tok = load_causal_lm(paths.sft)
    rm = RewardModel.load(paths.rm)
    t0 = time.perf_counter()
    out = reference_scores(
        model,
        tok,
        rm,
        rows,
        render_prompts(tok, [r["prompt"] for r in rows], cfg.policy),
        cfg.methods.par.n_refs,
        cfg.rl.max_completion_length,
        cfg.rl.temperature,
        seed=cfg.seed,
        max_length=cfg.reward_model.max_length,
        progress=progress,
    )
    write_jsonl(paths.models / "par_reference.jsonl", out)
    scores = [r["ref_score"] for r in out]
    metrics = {"n_prompts": len(out), "n_refs": cfg.methods.par.n_refs, "ref_score_mean": sum(scores) / len(scores)}
    write_json(paths.metrics / "par_reference.json", metrics)
    return {"metrics": metrics, "timings": {"seconds": time.perf_counter() - t0}}
