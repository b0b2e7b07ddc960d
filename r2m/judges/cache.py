"""Persistent cache of LLM-judge replies (SQLite), so a rerun never pays for, or recomputes, a judgement twice.

A key hashes everything that determines a reply: the judge's identity (endpoint + model, or local model), the
rendered chat messages (template, prompt, both responses, presentation order) and the decoding parameters. The
cached record is the raw reply plus its token counts; the verdict is re-parsed on every read, so a parser fix
applies to cached replies too. Never stores credentials: nothing that goes into a key or a record is a secret.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def cache_key(judge_id: str, messages: list[dict[str, str]], params: Mapping[str, Any]) -> str:
    """SHA-256 over the judge identity, the messages and the decoding parameters (stable JSON)."""
    payload = json.dumps(
        {"judge": judge_id, "messages": messages, "params": dict(params)}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ReplyCache:
    """Thread-safe SQLite key -> JSON record store (one table, ``replies``).

    Records are dicts such as ``{"text": ..., "finish_reason": ..., "prompt_tokens": ..., "completion_tokens": ...}``.
    Writes commit immediately, so replies paid for before a crash are kept.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, record TEXT NOT NULL)")
            self._db.commit()

    def get(self, key: str) -> dict[str, Any] | None:
        """The record stored under ``key``, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT record FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        """Store (or replace) ``record`` under ``key`` and commit."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies (key, record) VALUES (?, ?)", (key, json.dumps(dict(record)))
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
