"""The judge named by the config (``judge.kind``: gold, openai, local), its directory-safe label and its counters."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from r2m.config import Config, ConfigError
from r2m.judges.base import Judge
from r2m.judges.gold import gold_judge, load_gold
from r2m.paths import Paths


def build_judge(cfg: Config, paths: Paths) -> Judge:
    """The judge named by ``cfg.judge.kind``; gold needs the embedded task's ``data/posts.jsonl``."""
    kind = cfg.judge.kind
    if kind == "gold":
        posts, gold_fn = load_gold(paths)
        if gold_fn is None:
            raise ConfigError(
                f"judge.kind=gold: {paths.data / 'posts.jsonl'} not found (only the embedded task has a gold judge); "
                "use --judge local or --judge openai"
            )
        return gold_judge(posts, gold_fn)
    if kind == "openai":
        from r2m.judges.openai_compat import OpenAICompatibleJudge

        return OpenAICompatibleJudge.from_config(cfg.judge, paths.root)
    from r2m.judges.local import LocalChatJudge

    return LocalChatJudge.from_config(cfg.judge, paths.root)


def reference_judge(cfg: Config, paths: Paths) -> Judge | None:
    """The gold judge to measure an LLM judge against (``None`` for the gold judge itself or without a gold task)."""
    if cfg.judge.kind == "gold":
        return None
    posts, gold_fn = load_gold(paths)
    return None if gold_fn is None else gold_judge(posts, gold_fn)


def judge_label(cfg: Config) -> str:
    """Directory-safe judge name: ``gold``, ``local-smollm2-direct``, ``openai-gpt-4o-mini`` (plus the template when
    it is not ``tldr``), so reports of different judges never overwrite each other."""
    jc = cfg.judge
    parts = [jc.kind]
    if jc.kind == "openai":
        parts.append(Path(jc.model).name)
    if jc.kind == "local":
        parts += [Path(jc.local_model).name, *([jc.local_answer] if jc.local_answer != "generate" else [])]
    if jc.kind != "gold" and jc.template != "tldr":
        parts.append(Path(jc.template).stem)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))


def describe(judge: Judge) -> dict[str, Any]:
    """Loggable judge parameters (LLM judges describe themselves; nothing secret is ever included)."""
    return judge.describe() if hasattr(judge, "describe") else {"kind": judge.name}


def usage(judge: Judge) -> dict[str, Any]:
    """Requests / cache hits / tokens / cost of an LLM judge so far (empty for gold)."""
    return judge.usage() if hasattr(judge, "usage") else {}
