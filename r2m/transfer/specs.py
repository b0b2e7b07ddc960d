"""How ``transfer.sources`` names its sources (no model code: the config checks them when it loads)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BUILT_IN = ("rouge_l", "embedding", "reward_model", "logprob")
VARIANTS = ("tpo", "online", "sources")  # and source:<name>


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


def expand_variants(variants: Sequence[str], source_names: Sequence[str]) -> list[str]:
    """``transfer.variants`` with ``sources`` expanded to ``source:<name>`` for every source (order kept, no
    repeats); raises ValueError on a variant that is none of :data:`VARIANTS` or ``source:<a source's name>``."""
    out: list[str] = []
    for v in variants:
        if v not in VARIANTS and not (v.startswith("source:") and v[7:] in source_names):
            raise ValueError(
                f"transfer.variants: {v!r}; valid: tpo, online, sources, source:<one of {', '.join(source_names)}>"
            )
        for x in [f"source:{n}" for n in source_names] if v == "sources" else [v]:
            if x not in out:
                out.append(x)
    return out
