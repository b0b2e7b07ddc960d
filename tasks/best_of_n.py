"""Stage ``best_of_n``: best-of-n of the SFT policy with the proxy RM, no training (Gao et al., 2022).

On the first ``best_of_n.n_prompts`` eval prompts, ``best_of_n.n_max`` samples each of the SFT policy, scored by the
proxy RM (``models/rm``), the held-out RM and gold. For n = 1, 2, 4, ..., n_max: gold, proxy and held-out reward of
the proxy's pick, exactly averaged over n-subsets, against sqrt(KL_bon) (``r2m.evaluation.best_of_n``). Gold must
rise with n at first, or the proxy carries no true signal and RL against it means nothing (a warning, and the
verdict in the metrics). A real dataset has no gold judge: the held-out RM (other pairs, other seed) stands in for
it, and ``gold_from`` in the metrics says so. Writes ``metrics/best_of_n.json``, ``metrics/best_of_n.csv`` (the DVC
plot) and ``plots/best_of_n.png``.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import numpy as np

from r2m.config import Config
from r2m.data.io import PROMPT_SCHEMA, read_jsonl, write_json
from r2m.data.rows import gold_key
from r2m.evaluation.best_of_n import best_of_n_report, plot_best_of_n
from r2m.generation import generate
from r2m.judges.gold import load_gold
from r2m.models.builders import load_causal_lm
from r2m.models.reward_model import RewardModel
from r2m.paths import Paths
from r2m.prompts import render_prompts

log = logging.getLogger("r2m")

CSV_COLUMNS = ("n", "kl", "sqrt_kl", "gold", "proxy", "heldout")


def curve_csv(curve: list[dict]) -> str:
    """The curve as CSV text, one row per n (``CSV_COLUMNS``)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(curve)
    return buf.getvalue()


def best_of_n(cfg: Config, workdir: str | Path = ".", progress: bool = True) -> dict:
    """Sample, score, compute the curve, then write the JSON, CSV and PNG (module docstring)."""
    paths = Paths.of(cfg, workdir)
    n_max, ml = cfg.best_of_n.n_max, cfg.reward_model.max_length
    _, gold_fn = load_gold(paths)
    rows = read_jsonl(paths.data / "eval_prompts.jsonl", PROMPT_SCHEMA)[: cfg.best_of_n.n_prompts]
    if len(rows) < 2:
        raise ValueError(f"{paths.data / 'eval_prompts.jsonl'}: {len(rows)} prompts; best_of_n needs at least 2")

    t0 = time.perf_counter()
    model, tok = load_causal_lm(paths.sft)
    rendered = render_prompts(tok, [r["prompt"] for r in rows], cfg.policy)
    completions = generate(
        model,
        tok,
        [p for p in rendered for _ in range(n_max)],  # prompt-major: sample j of prompt i at i * n_max + j
        max_new_tokens=cfg.rl.max_completion_length,
        greedy=False,
        temperature=cfg.rl.temperature,
        batch_size=64,
        seed=cfg.seed,
        progress=progress,
    )
    del model
    t1 = time.perf_counter()
    texts = [rows[i // n_max]["prompt"] + c for i, c in enumerate(completions)]  # the RMs read the plain prompt
    shape = (len(rows), n_max)
    proxy = RewardModel.load(paths.rm).score_texts(texts, max_length=ml).numpy().reshape(shape)
    heldout = RewardModel.load(paths.rm_heldout).score_texts(texts, max_length=ml).numpy().reshape(shape)
    if gold_fn is not None:
        gold = np.array(gold_fn([gold_key(r) for r in rows for _ in range(n_max)], completions)).reshape(shape)
    else:
        gold = heldout
    t2 = time.perf_counter()

    metrics = best_of_n_report(proxy, gold, heldout)
    if gold_fn is None:
        metrics["gold_from"] = "rm_heldout (a real dataset has no gold judge)"
    if not metrics["gold_rises"]:
        log.warning("best_of_n: %s", metrics["verdict"])
    else:
        log.info("best_of_n: %s", metrics["verdict"])
    csv_text = curve_csv(metrics["curve"])
    png = plot_best_of_n(metrics["curve"], metrics["verdict"], paths.plots / "best_of_n.png")
    write_json(paths.metrics / "best_of_n.json", metrics)
    (paths.metrics / "best_of_n.csv").write_text(csv_text)
    return {
        "metrics": metrics,
        "step_metrics": [[{"step": r["n"], **r} for r in metrics["curve"]]],
        "artifacts": [str(png)],
        "timings": {"generate_seconds": t1 - t0, "score_seconds": t2 - t1, "samples": len(completions)},
    }
