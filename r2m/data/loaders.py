"""Loaders for real preference / summarisation datasets, converted to the pipeline's row schemas.

Each loader accepts ``source``, which is either

* a local file (``.json``, ``.jsonl`` or ``.parquet``) - read with
  ``datasets.load_dataset("json" | "parquet", data_files=path, split="train")``; ``split`` then
  only namespaces the generated row ids, since a single file has exactly one split;
* a local directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` - read with
  ``datasets.load_from_disk`` (``split`` selects from a ``DatasetDict``; a plain ``Dataset`` is used
  as is);
* any other local directory holding data files, e.g. a hub snapshot with
  ``data/train_prefs-00000-of-00001.parquet`` - read with ``datasets.load_dataset(dir, split=split)``;
* otherwise a hub id such as ``"trl-lib/tldr"`` - read with ``datasets.load_dataset(source, split=split)``
  (this needs network access or a populated HF cache and is not covered by the offline tests).

Local paths work fully offline. A source that looks like a path (starts with ``/``, ``.`` or ``~``,
contains a backslash or two or more ``/``, or ends with a known extension) but does not exist raises
:class:`FileNotFoundError`; a bare ``owner/name`` that is not a local path is taken as a hub id.

Every row is validated; problems raise :class:`~r2m.data.io.DataValidationError` naming the file
(or ``"{hub_id}[{split}]"``), the 1-based row (the line number for JSONL files, else the record
index) and the field, e.g. ``summaries[1].text``. Row ids are generated as
``"{prefix}-{split}-{index:06d}"`` (0-based index within the source), so they are stable for a given
source and split and unaffected by ``limit``.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from r2m.data.io import (
    ROW,
    DataValidationError,
    check_fields,
    iter_jsonl,
    read_json,
)

__all__ = [
    "LOADERS",
    "load_named",
    "load_summarize_from_feedback",
    "load_tldr",
    "load_ultrafeedback_binarized",
    "tldr_prompts",
]

logger = logging.getLogger(__name__)

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_ROLES = ("system", "user", "assistant")


# --------------------------------------------------------------------------------------------------
# Source resolution
# --------------------------------------------------------------------------------------------------


def _looks_like_path(source: str) -> bool:
    """Heuristic: does ``source`` name a local path rather than a hub id (``owner/name``)?"""
    return (
        source.startswith(("/", ".", "~"))
        or "\\" in source
        or (os.sep != "/" and os.sep in source)
        or source.count("/") >= 2
        or Path(source).suffix.lower() in _FILE_BUILDERS
    )


def _iter_dataset(ds: Iterable[Any], line_numbers: Iterator[int] | None = None) -> Iterator[tuple[int, Any]]:
    """Number the rows of a ``datasets.Dataset`` from 1, or by ``line_numbers`` (JSONL files)."""
    for index, record in enumerate(ds, start=1):
        number = next(line_numbers, None) if line_numbers is not None else None
        yield (index if number is None else number), record


def _non_blank_line_numbers(path: Path) -> Iterator[int]:
    """1-based numbers of the non-blank lines of a file (the lines a JSONL reader turns into rows)."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if raw.strip():
                yield lineno


def _is_json_array(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")


def _iter_json_file(path: Path, label: str) -> Iterator[tuple[int, Any]]:
    """Stdlib reader for a JSON-array or JSONL file (fallback when ``datasets`` cannot parse it)."""
    if _is_json_array(path):
        data = read_json(path)
        if not isinstance(data, list):  # pragma: no cover - "[" always parses to a list
            raise DataValidationError(label, 1, ROW, "expected a JSON array of objects")
        return enumerate(data, start=1)
    return iter_jsonl(path)


def _open_source(source: str | os.PathLike[str], split: str, config: str | None = None) -> tuple[str, Iterator]:
    """Resolve ``source`` (see module docstring) to ``(label, iterator of (row_number, record))``."""
    import datasets  # deferred: importing datasets costs ~1 s

    src = os.fspath(source)
    path = Path(src).expanduser()
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            valid = ", ".join(sorted(_FILE_BUILDERS))
            raise ValueError(f"{src}: unsupported file type {path.suffix!r} (expected one of {valid})")
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as exc:  # datasets raises many types: fall back or wrap
            if builder != "json":
                raise ValueError(f"{src}: cannot read parquet file: {exc}") from exc
            # Typically invalid JSON or an empty file: the stdlib reader pinpoints the bad line.
            logger.debug("datasets could not read %s (%s); using the stdlib JSON reader", src, exc)
            return src, _iter_json_file(path, src)
        # Report JSONL rows by line number, as read_jsonl does (blank lines are skipped but counted).
        lines = None if builder != "json" or _is_json_array(path) else _non_blank_line_numbers(path)
        return src, _iter_dataset(ds, lines)

    label = f"{src}[{split}]"
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise ValueError(f"{src}: no split {split!r} (available: {', '.join(loaded)})")
                return label, _iter_dataset(loaded[split])
            return src, _iter_dataset(loaded)
        try:
            return label, _iter_dataset(datasets.load_dataset(str(path), split=split))
        except (ValueError, datasets.exceptions.DatasetsError) as exc:
            raise ValueError(f"{label}: cannot load dataset directory: {exc}") from exc

    if _looks_like_path(src):
        raise FileNotFoundError(errno.ENOENT, "dataset path not found", src)
    try:
        return label, _iter_dataset(datasets.load_dataset(src, config, split=split))
    except ValueError as exc:  # e.g. unknown split: the datasets message does not name the dataset
        raise ValueError(f"{label}: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# Row validation helpers
# --------------------------------------------------------------------------------------------------


class _Row:
    """Validation helpers bound to one source row (for error messages)."""

    def __init__(self, label: str, number: int) -> None:
        self.label = label
        self.number = number

    def error(self, field: str, problem: str) -> DataValidationError:
        return DataValidationError(self.label, self.number, field, problem)

    def mapping(self, value: Any, field: str) -> Mapping[str, Any]:
        if value is None:
            raise self.error(field, "missing")
        if not isinstance(value, Mapping):
            raise self.error(field, f"expected dict, got {type(value).__name__}")
        return value

    def sequence(self, value: Any, field: str) -> Sequence[Any]:
        if value is None:
            raise self.error(field, "missing")
        if not isinstance(value, list | tuple):
            raise self.error(field, f"expected list, got {type(value).__name__}")
        return value

    def string(self, value: Any, field: str, *, allow_empty: bool = False) -> str:
        if value is None:
            raise self.error(field, "missing")
        if not isinstance(value, str):
            raise self.error(field, f"expected str, got {type(value).__name__}")
        if not allow_empty and not value.strip():
            raise self.error(field, "empty string" if value == "" else "whitespace-only string")
        return value

    def optional_number(self, value: Any, field: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(field, f"expected a number, got {type(value).__name__}")
        return float(value)


def _check_limit(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    return limit


Converter = Callable[[Any, _Row], dict | None]


def _collect(
    prefix: str,
    source: str | os.PathLike[str],
    split: str,
    limit: int | None,
    convert: Converter,
    config: str | None = None,
) -> list[dict]:
    """Convert and validate rows from ``source`` until ``limit`` rows are produced.

    ``convert`` returns the row without its id, or ``None`` to skip a (valid but unusable) record.
    """
    limit = _check_limit(limit)
    if limit == 0:
        return []
    label, records = _open_source(source, split, config)
    out: list[dict] = []
    index = -1
    for index, (number, record) in enumerate(records):
        row = _Row(label, number)
        if not isinstance(record, Mapping):
            raise row.error(ROW, f"expected a JSON object, got {type(record).__name__}")
        converted = convert(record, row)
        if converted is None:
            continue
        out.append({"id": f"{prefix}-{split}-{index:06d}", **converted})
        if limit is not None and len(out) >= limit:
            break
    if not out:
        detail = "no rows" if index < 0 else f"no usable rows among {index + 1}"
        raise ValueError(f"{label}: {detail}")
    return out


# --------------------------------------------------------------------------------------------------
# TL;DR (trl-lib/tldr)
# --------------------------------------------------------------------------------------------------


def _convert_tldr(record: Mapping[str, Any], row: _Row) -> dict:
    check_fields(record, {"prompt": str, "completion": str}, path=row.label, row_number=row.number)
    return {"prompt": record["prompt"], "completion": record["completion"]}


def load_tldr(source: str, split: str = "train", limit: int | None = None) -> list[dict]:
    """Load ``trl-lib/tldr``-format data (``prompt``, ``completion``) as ``SFT_SCHEMA`` rows.

    Prompt and completion are kept verbatim (the completion usually starts with a space after
    ``"TL;DR:"``). Ids are ``"tldr-{split}-{index:06d}"``.
    """
    return _collect("tldr", source, split, limit, _convert_tldr)


def tldr_prompts(rows: Iterable[Mapping[str, Any]]) -> list[dict]:
    """Turn SFT rows (``id``, ``prompt``, ``completion``) into ``PROMPT_SCHEMA`` rows.

    ``reference`` is the completion with surrounding whitespace stripped.
    """
    out = []
    schema = {"id": str, "prompt": str, "completion": str}
    for number, r in enumerate(rows, start=1):
        check_fields(r, schema, path="<tldr rows>", row_number=number)
        out.append({"id": r["id"], "prompt": r["prompt"], "reference": r["completion"].strip()})
    return out


# --------------------------------------------------------------------------------------------------
# OpenAI summarize-from-feedback, "comparisons" config
# --------------------------------------------------------------------------------------------------


def _sff_prompt(subreddit: str, title: str, post: str) -> str:
    sub = subreddit.strip().removeprefix("r/")
    return f"SUBREDDIT: r/{sub}\nTITLE: {title.strip()}\nPOST: {post.strip()}\nTL;DR:"


def _convert_sff(record: Mapping[str, Any], row: _Row, *, skip_articles: bool) -> dict | None:
    info = row.mapping(record.get("info"), "info")
    if skip_articles and info.get("post") is None and isinstance(info.get("article"), str):
        return None  # CNN/DM article (validation split), not a Reddit post
    post = row.string(info.get("post"), "info.post")
    title = row.string(info.get("title"), "info.title", allow_empty=True)
    subreddit = row.string(info.get("subreddit"), "info.subreddit")

    summaries = row.sequence(record.get("summaries"), "summaries")
    if len(summaries) != 2:
        raise row.error("summaries", f"expected exactly 2 summaries, got {len(summaries)}")
    texts = []
    for i, summary in enumerate(summaries):
        s = row.mapping(summary, f"summaries[{i}]")
        texts.append(row.string(s.get("text"), f"summaries[{i}].text").strip())

    choice = record.get("choice")
    if choice is None:
        raise row.error("choice", "missing")
    if isinstance(choice, bool) or not isinstance(choice, int):
        raise row.error("choice", f"expected int, got {type(choice).__name__}")
    if choice not in (0, 1):
        raise row.error("choice", f"expected 0 or 1, got {choice}")
    return {
        "prompt": _sff_prompt(subreddit, title, post),
        "chosen": " " + texts[choice],
        "rejected": " " + texts[1 - choice],
    }


def load_summarize_from_feedback(
    source: str,
    split: str = "train",
    limit: int | None = None,
    *,
    config: str | None = "comparisons",
    skip_articles: bool = True,
) -> list[dict]:
    """Load OpenAI summarize-from-feedback *comparisons* as ``PAIR_SCHEMA`` rows.

    Input columns: ``info`` (``post``, ``title``, ``subreddit``, optional ``id``), ``summaries`` (exactly
    2 dicts with ``text``) and ``choice`` (0 or 1, index of the preferred summary). The prompt is
    ``"SUBREDDIT: r/{subreddit}\\nTITLE: {title}\\nPOST: {post}\\nTL;DR:"``; ``chosen`` / ``rejected``
    are ``" " + text.strip()``. ``config`` is passed to ``load_dataset`` for hub ids only (the hub
    dataset ``openai/summarize_from_feedback`` needs ``"comparisons"``). With ``skip_articles``, CNN/DM
    rows (``info.post`` null, ``info.article`` set; present in the hub validation split) are skipped
    instead of rejected. Ids are ``"sff-{split}-{index:06d}"``.
    """

    def convert(record: Mapping[str, Any], row: _Row) -> dict | None:
        return _convert_sff(record, row, skip_articles=skip_articles)

    src = os.fspath(source)
    is_local = os.path.exists(os.path.expanduser(src))
    return _collect("sff", source, split, limit, convert, None if is_local else config)


# --------------------------------------------------------------------------------------------------
# HuggingFaceH4/ultrafeedback_binarized
# --------------------------------------------------------------------------------------------------


def _messages(value: Any, field: str, row: _Row) -> list[dict[str, str]]:
    """Validate a chat transcript; the last message must be a non-empty assistant message."""
    messages = row.sequence(value, field)
    if not messages:
        raise row.error(field, "empty message list")
    out = []
    for i, message in enumerate(messages):
        m = row.mapping(message, f"{field}[{i}]")
        role = row.string(m.get("role"), f"{field}[{i}].role")
        if role not in _ROLES:
            raise row.error(f"{field}[{i}].role", f"unknown role {role!r} (expected one of {', '.join(_ROLES)})")
        content = row.string(m.get("content"), f"{field}[{i}].content", allow_empty=role == "system")
        out.append({"role": role, "content": content})
    last = len(out) - 1
    if out[last]["role"] != "assistant":
        raise row.error(f"{field}[{last}].role", f"last message must be from the assistant, got {out[last]['role']!r}")
    return out


def _convert_ufb(record: Mapping[str, Any], row: _Row) -> dict:
    prompt = row.string(record.get("prompt"), "prompt")
    chosen = _messages(record.get("chosen"), "chosen", row)
    rejected = _messages(record.get("rejected"), "rejected", row)
    out: dict[str, Any] = {
        "prompt": prompt,
        "chosen": chosen[-1]["content"],
        "rejected": rejected[-1]["content"],
        "messages_chosen": chosen,
        "messages_rejected": rejected,
    }
    for key in ("score_chosen", "score_rejected"):
        score = row.optional_number(record.get(key), key)
        if score is not None:
            out[key] = score
    return out


def load_ultrafeedback_binarized(source: str, split: str = "train_prefs", limit: int | None = None) -> list[dict]:
    """Load ``HuggingFaceH4/ultrafeedback_binarized``-format data as ``PAIR_SCHEMA`` rows.

    Input columns: ``prompt`` (str), ``chosen`` / ``rejected`` (lists of ``{"role", "content"}``
    messages ending with the assistant's reply), optional ``score_chosen`` / ``score_rejected``.
    ``chosen`` / ``rejected`` are the final assistant contents; the full transcripts are kept as
    ``messages_chosen`` / ``messages_rejected`` (only ``role`` and ``content``) for chat templates,
    and the scores as floats when present. Roles must be system/user/assistant and non-system
    contents non-empty. Ids are ``"ufb-{split}-{index:06d}"``.
    """
    return _collect("ufb", source, split, limit, _convert_ufb)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

LOADERS: dict[str, Callable[..., list[dict]]] = {
    "tldr": load_tldr,
    "summarize_from_feedback": load_summarize_from_feedback,
    "ultrafeedback_binarized": load_ultrafeedback_binarized,
}


def load_named(kind: str, source: str, split: str | None = None, limit: int | None = None) -> list[dict]:
    """Dispatch to ``LOADERS[kind]``; ``split=None`` uses that loader's default split.

    Raises :class:`ValueError` listing the valid kinds when ``kind`` is unknown.
    """
    try:
        loader = LOADERS[kind]
    except KeyError:
        raise ValueError(f"unknown dataset kind {kind!r}; valid kinds: {', '.join(sorted(LOADERS))}") from None
    if split is None:
        return loader(source, limit=limit)
    return loader(source, split, limit)
