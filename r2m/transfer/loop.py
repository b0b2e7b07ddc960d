"""One iteration of empirical TPO's data collection over a set of prompts, for one variant.

A variant is ``tpo`` (UCB over every source and online learning), ``online`` (no transfer) or ``source:<name>`` (that
source always). Per prompt the online policy samples ``K`` responses (and ``N`` extras when a source may be chosen,
from the same policy); :func:`r2m.transfer.collect.collect_prompt` makes the DPO pair.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from r2m.config import PolicyConfig, TransferConfig
from r2m.generation import generate
from r2m.prompts import render_prompts
from r2m.transfer.collect import AnnotationBudget, collect_prompt
from r2m.transfer.sources import Source
from r2m.transfer.ucb import ONLINE, WinRateUCB


def candidates_of(variant: str, source_names: Sequence[str]) -> list[str]:
    """The candidates a variant's UCB chooses among."""
    if variant == "tpo":
        return [*source_names, ONLINE]
    if variant == "online":
        return [ONLINE]
    if variant.startswith("source:") and variant[7:] in source_names:
        return [variant[7:]]
    raise ValueError(f"unknown transfer variant {variant!r}")


def run_name(variant: str) -> str:
    """A variant as a directory / run name (``source:rouge_l`` -> ``source-rouge_l``)."""
    return variant.replace(":", "-")


@dataclass
class Iteration:
    """What an iteration collected: DPO pairs (``prompt`` as the policy sees it, ``chosen``, ``rejected``) and one
    record per prompt (candidate, win sample, the human's best and worst score)."""

    pairs: list[dict]
    records: list[dict]

    def selection(self) -> dict[str, int]:
        """Prompts collected by each candidate."""
        return dict(Counter(r["candidate"] for r in self.records))

    def win_rates(self) -> dict[str, float]:
        """Each source's win rate (the human's best was one of its responses) over the prompts it collected."""
        out: dict[str, list[int]] = {}
        for r in self.records:
            if r["win"] is not None:
                out.setdefault(r["candidate"], []).append(r["win"])
        return {c: sum(w) / len(w) for c, w in out.items()}


def _source_scorer(src: Source, row: Mapping) -> Callable[[Sequence[str]], list[float]]:
    """``src`` scoring texts as responses to ``row``'s prompt, against its reference."""

    def score(texts: Sequence[str]) -> list[float]:
        return src([row["prompt"]] * len(texts), texts, [row["reference"]] * len(texts))

    return score


def collect_iteration(
    model,
    tok,
    rows: Sequence[Mapping],
    variant: str,
    sources: Mapping[str, Source],
    human: Callable[[Mapping, Sequence[str]], list[float]],
    tcfg: TransferConfig,
    policy_cfg: PolicyConfig,
    budget: AnnotationBudget,
    seed: int,
) -> Iteration:
    """Collect ``rows`` (prompt rows with ``prompt`` and ``reference``) for ``variant``; ``human(row, texts)``
    scores responses (each one an annotation of ``budget``). Deterministic given ``seed``."""
    names = list(sources)
    candidates = candidates_of(variant, names)
    ucb = WinRateUCB(candidates, tcfg.ucb_coef, tcfg.bar, tcfg.refresh_every, rng=random.Random(seed))
    needs_extras = candidates != [ONLINE]
    per_prompt = tcfg.k + (tcfg.n_extra if needs_extras else 0)
    rendered = render_prompts(tok, [r["prompt"] for r in rows], policy_cfg)
    samples = generate(
        model,
        tok,
        [p for p in rendered for _ in range(per_prompt)],
        tcfg.max_new_tokens,
        greedy=False,
        temperature=tcfg.temperature,
        batch_size=max(per_prompt, 32),
        seed=seed,
    )
    pairs, records = [], []
    for i, (row, prompt) in enumerate(zip(rows, rendered, strict=True)):
        own = samples[i * per_prompt : (i + 1) * per_prompt]
        responses, extras = own[: tcfg.k], own[tcfg.k :]
        candidate = ucb.select()
        score = None if candidate == ONLINE else _source_scorer(sources[candidate], row)
        got = collect_prompt(
            candidate, responses, extras, score, lambda texts, row=row: human(row, texts), budget, tcfg.replace
        )
        ucb.record(candidate, got.win)
        pairs.append({"id": row["id"], "prompt": prompt, "chosen": got.chosen, "rejected": got.rejected})
        records.append(
            {
                "id": row["id"],
                "candidate": candidate,
                "win": got.win,
                "best_score": got.scores[got.best],
                "worst_score": got.scores[got.worst],
                "tie": got.scores[got.best] == got.scores[got.worst],
            }
        )
    return Iteration(pairs, records)
