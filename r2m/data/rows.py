"""Row helpers shared by the stages, for every ``data.source``.

Prompt rows of the synthetic task carry ``post_id`` (the post the gold judge scores against; equal to ``id``);
rows of a real dataset do not, so stages key judge context and generation files through these helpers instead of
reading ``post_id`` directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any


def gold_key(row: Mapping[str, Any]) -> str:
    """The id the gold judge looks a row up by: its ``post_id`` (synthetic task), else its ``id``."""
    return row.get("post_id", row["id"])


def generation_rows(rows: Sequence[Mapping[str, Any]], completions: Sequence[str]) -> Iterator[dict[str, Any]]:
    """``{"id", ["post_id",] "completion"}`` per prompt row: what the generation files hold (``post_id`` only when
    the prompt row has one, so the synthetic task's files keep their bytes)."""
    for r, c in zip(rows, completions, strict=True):
        yield {"id": r["id"], **({"post_id": r["post_id"]} if "post_id" in r else {}), "completion": c}
