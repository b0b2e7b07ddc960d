"""How ``transfer.sources`` names its sources (no model code: the config checks them when it loads)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BUILT_IN = ("rouge_l", "embedding", "reward_model", "logprob")


@dataclass(frozen=True)
class SourceSpec:
    """``name`` (what reports call it), ``kind`` (a built-in of :data:`BUILT_IN` or ``module:function``) and
    ``path`` (the model of ``reward_model`` / ``logprob``)."""

    name: str
    kind: str
    path: str = ""


def parse_sources(specs: Sequence[str]) -> list[SourceSpec]:
    """``transfer.sources`` entries (``kind``, ``name=kind`` or ``name=kind@path``) as specs; raises ValueError on a
    malformed or repeated one."""
    out: list[SourceSpec] = []
    for raw in specs:
        name, _, rest = raw.partition("=") if "=" in raw else (raw, "", raw)
        kind, _, path = rest.partition("@")
        if not name or not kind or (kind not in BUILT_IN and kind.count(":") != 1):
            raise ValueError(
                f"transfer.sources: {raw!r} is not kind, name=kind or name=kind@path with kind one of "
                f"{', '.join(BUILT_IN)} or module:function"
            )
        if name in {s.name for s in out} or name in ("online", "tpo", "sources"):
            raise ValueError(f"transfer.sources: the name {name!r} is taken")
        out.append(SourceSpec(name, kind, path))
    return out
