"""A variant's iterations: collect with the current policy, train DPO against it, repeat; resumable per iteration.

Layout of one variant (``<out>/<run>/``)::

    iter_<i>/policy/        the policy after iteration i (safetensors + tokenizer)
    iter_<i>/pairs.jsonl    the DPO pairs it trained on (prompt as the policy saw it, chosen, rejected)
    iter_<i>/records.jsonl  one row per prompt: candidate, win sample, the human's best and worst score
    iter_<i>/iteration.json selection counts, source win rates, annotations used, DPO log (written last)

An iteration directory is written under a temporary name and renamed once complete, so a rerun after a crash
starts at the first iteration without ``iteration.json`` and ends with the same bytes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from r2m.config import PolicyConfig, TransferConfig
from r2m.data.io import write_json, write_jsonl
from r2m.transfer.collect import AnnotationBudget, BudgetExhausted
from r2m.transfer.dpo import train_dpo
from r2m.transfer.loop import collect_iteration, run_name
from r2m.transfer.sources import Source

ITERATION_FILE = "iteration.json"


def iteration_prompts(rows: Sequence[Mapping], tcfg: TransferConfig, i: int) -> list[Mapping]:
    """Iteration ``i``'s prompts (1-based): the next ``prompts_per_iteration`` rows, wrapping around."""
    n = tcfg.prompts_per_iteration
    return [rows[(j % len(rows))] for j in range((i - 1) * n, i * n)]


def run_variant(
    variant: str,
    sft_dir: Path,
    out: Path,
    rows: Sequence[Mapping],
    sources: Mapping[str, Source],
    human: Callable[[Mapping, Sequence[str]], list[float]],
    tcfg: TransferConfig,
    policy_cfg: PolicyConfig,
    seed: int,
    max_length: int = 512,
) -> list[dict]:
    """Run (or resume) ``variant`` for ``tcfg.iterations``; returns every iteration's summary."""
    from r2m.models.builders import load_causal_lm

    run_dir = out / run_name(variant)
    run_dir.mkdir(parents=True, exist_ok=True)
    budget = AnnotationBudget(tcfg.budget)
    summaries = []
    policy = sft_dir
    for i in range(1, tcfg.iterations + 1):
        it_dir = run_dir / f"iter_{i}"
        done = it_dir / ITERATION_FILE
        if done.exists():
            summary = json.loads(done.read_text())
            budget.spend(summary["annotations"])
        else:
            tmp = run_dir / f".iter_{i}.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            prompts = iteration_prompts(rows, tcfg, i)
            need = len(prompts) * tcfg.k
            if budget.left is not None and need > budget.left:  # refused before anything is sampled or asked
                raise BudgetExhausted(
                    f"annotation budget {tcfg.budget}: {budget.used} used, iteration {i} needs {need} more "
                    f"(transfer.prompts_per_iteration x transfer.k)"
                )
            model, tok = load_causal_lm(policy)
            it_seed = seed * 1000 + i
            got = collect_iteration(
                model,
                tok,
                iteration_prompts(rows, tcfg, i),
                variant,
                sources,
                human,
                tcfg,
                policy_cfg,
                budget,
                it_seed,
            )
            del model
            log = train_dpo(policy, got.pairs, tmp / "policy", tcfg, it_seed, max_length=max_length)
            shutil.rmtree(tmp / ".policy.trainer", ignore_errors=True)
            write_jsonl(tmp / "pairs.jsonl", got.pairs)
            write_jsonl(tmp / "records.jsonl", got.records)
            summary = {
                "variant": variant,
                "iteration": i,
                "prompts": len(got.records),
                "selection": got.selection(),
                "source_win_rates": got.win_rates(),
                "annotations": len(got.records) * tcfg.k,
                "annotations_total": budget.used,
                "ties": sum(r["tie"] for r in got.records),
                "dpo": log,
            }
            write_json(tmp / ITERATION_FILE, summary)
            if it_dir.exists():
                shutil.rmtree(it_dir)
            tmp.rename(it_dir)
        summaries.append(summary)
        policy = it_dir / "policy"
    return summaries
