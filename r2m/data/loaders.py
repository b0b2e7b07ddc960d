"""Loaders for real preference / summarisation datasets, converted to the pipeline's row schemas.

These are what the ``prepare`` stage calls for ``data.source`` in :data:`LOADERS` (see :func:`load_named`). Each
loader accepts ``source``, which is either

* a local ``.json`` / ``.jsonl`` file - read with the stdlib reader (:func:`r2m.data.io.iter_jsonl`, or
  :func:`r2m.data.io.read_json` for a JSON array), so values keep their JSON types (no pyarrow coercion: a string
  score stays a string and is rejected) and every error names the file and the line; ``split`` then only namespaces
  the generated row ids, since a single file has exactly one split;
* a local ``.parquet`` file - read with ``datasets.load_dataset("parquet", data_files=path, split="train")``;
* a local directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` - read with
  ``datasets.load_from_disk`` (``split`` selects from a ``DatasetDict``; a plain ``Dataset`` is used as is);
* any other local directory holding data files, e.g. a hub snapshot with
  ``data/train_prefs-00000-of-00001.parquet`` - read with ``datasets.load_dataset(dir, split=split)``;
* otherwise a hub id such as ``"trl-lib/tldr"`` - read with ``datasets.load_dataset(source, split=split)`` (runs are
  offline, so this needs a copy in the local Hugging Face cache).

Errors come in two kinds, both :class:`ValueError` subclasses:

* :class:`~r2m.data.io.DatasetError` - the source as a whole cannot be used: a path that does not exist (a source
  that starts with ``/``, ``.`` or ``~``, contains a backslash or two or more ``/``, or ends with a known extension is
  a path; a bare ``owner/name`` is a hub id), an unreadable file, an unsupported file type, a first row in none of
  the known formats (or in another kind's format: the message names the kind it looks like), a hub id not available
  offline, an unknown split, no usable rows. One line: ``"{file or hub_id[split]}: {problem}; {what to do}"``.
* :class:`~r2m.data.io.DataValidationError` - one row is malformed: it names the file (or ``"{hub_id}[{split}]"``),
  the 1-based row (the line number for JSONL files, else the record index) and the field, e.g. ``summaries[1].text``.

Row ids are ``"{prefix}-{split}-{index:06d}"`` (0-based index within the source), so they are stable for a given
source and split and unaffected by ``limit``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r2m.data.io import (
    ROW,
    DatasetError,
    DataValidationError,
    check_fields,
    iter_jsonl,
    read_json,
)

__all__ = [
    "COMPLETION_KINDS",
    "KIND_FIELDS",
    "LOADERS",
    "PAIR_KINDS",
    "detect_kind",
    "load_hh_rlhf",
    "load_named",
    "load_preference",
    "load_summarize_from_feedback",
    "load_tldr",
    "load_ultrafeedback",
    "load_ultrafeedback_binarized",
    "tldr_prompts",
]

_JSON_SUFFIXES = (".json", ".jsonl")
_FILE_SUFFIXES = (*_JSON_SUFFIXES, ".parquet")
_ROLES = ("system", "user", "assistant")
_HUMAN = "\n\nHuman:"
_ASSISTANT = "\n\nAssistant:"

#: Kinds whose rows are preference pairs (``prompt``, ``chosen``, ``rejected``; ``PAIR_SCHEMA``).
PAIR_KINDS = frozenset({"summarize_from_feedback", "ultrafeedback", "preference", "hh_rlhf"})
#: Kinds whose rows are prompt / completion pairs (``SFT_SCHEMA``).
COMPLETION_KINDS = frozenset({"tldr"})
#: The fields by which :func:`detect_kind` recognises each kind (as its error messages list them).
KIND_FIELDS: dict[str, str] = {
    "tldr": "prompt, completion",
    "summarize_from_feedback": "info, summaries, choice",
    "ultrafeedback": "prompt, chosen/rejected message lists",
    "preference": "prompt, chosen, rejected",
    "hh_rlhf": "chosen, rejected transcripts, no prompt",
}

Records = Generator[tuple[int, Any], None, None]


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
        or Path(source).suffix.lower() in _FILE_SUFFIXES
    )


def _iter_dataset(ds: Iterable[Any]) -> Records:
    """Number the rows of a ``datasets.Dataset`` from 1."""
    yield from enumerate(ds, start=1)


def _starts_with_bracket(path: Path) -> bool:
    """Does the file's first non-blank byte open a JSON array?"""
    with open(path, "rb") as fh:
        return fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")


def _json_document(path: Path, *, is_array: bool) -> Any | None:
    """The file's single JSON value, or ``None`` when it is not one JSON document (then it is read as JSON lines).

    A file that starts with ``[`` must be one document: its parse error (with the right line) is raised as is.
    """
    try:
        return read_json(path)
    except DataValidationError as exc:
        if is_array or not exc.problem.startswith("invalid JSON"):
            raise
        return None


def _iter_json_file(path: Path, label: str) -> Records:
    """Stdlib reader for a ``.json`` / ``.jsonl`` file: a JSON array of rows, one row object, or JSON lines.

    JSON lines are numbered by line, array elements by position. OS errors become :class:`DatasetError`.
    """
    try:
        is_array = _starts_with_bracket(path)
        document = None
        if is_array or path.suffix.lower() == ".json":
            document = _json_document(path, is_array=is_array)
        if document is None:
            yield from iter_jsonl(path)
        else:
            yield from enumerate(document if isinstance(document, list) else [document], start=1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DatasetError(label, f"cannot read the file ({reason}); check that data.path is readable") from exc


def _hub_offline() -> bool:
    """Is the Hugging Face Hub switched off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``)?"""
    import datasets

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("HF_DATASETS_OFFLINE", ""))
    return bool(getattr(datasets.config, "HF_HUB_OFFLINE", False)) or any(
        flag.strip().upper() in {"1", "ON", "YES", "TRUE"} for flag in flags
    )


def _first_line(exc: BaseException) -> str:
    """``"{type}: {first line of the message}"`` of an exception (for one-line messages)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _datasets_error(label: str, split: str, exc: Exception, *, hub: bool) -> DatasetError:
    """Turn an exception of ``datasets`` / pyarrow / the hub client into a one-line :class:`DatasetError`."""
    if hub and (isinstance(exc, ConnectionError) or _hub_offline()):
        return DatasetError(
            label,
            "not available offline (no local copy in the Hugging Face cache); "
            "pass a local file or directory as data.path",
        )
    if isinstance(exc, ValueError) and "split" in str(exc).lower():
        return DatasetError(label, f"unknown split {split!r} ({_first_line(exc)}); set data.split to one of its splits")
    if hub:
        return DatasetError(
            label,
            f"cannot load from the Hugging Face Hub ({_first_line(exc)}); "
            "check the dataset id or pass a local file or directory as data.path",
        )
    return DatasetError(label, f"cannot load the dataset ({_first_line(exc)}); check data.path")


def _load(label: str, split: str, load: Callable[[], Any], *, hub: bool = False) -> Any:
    """Call ``load()`` (a ``datasets`` loading function), converting its errors with :func:`_datasets_error`."""
    try:
        return load()
    except Exception as exc:  # datasets, pyarrow, fsspec and huggingface_hub raise many unrelated types
        raise _datasets_error(label, split, exc, hub=hub) from exc


def _open_file(path: Path, label: str) -> Records:
    """Open a local file by its extension (see the module docstring)."""
    suffix = path.suffix.lower()
    if suffix in _JSON_SUFFIXES:
        return _iter_json_file(path, label)
    if suffix == ".parquet":
        import datasets  # deferred: importing datasets costs ~1 s

        def load() -> Any:
            return datasets.load_dataset("parquet", data_files=str(path), split="train")

        return _iter_dataset(_load(label, "train", load))
    valid = ", ".join(_FILE_SUFFIXES)
    raise DatasetError(
        label, f"unsupported file type {path.suffix!r}; use a {valid} file or a dataset directory as data.path"
    )


def _open_directory(path: Path, src: str, split: str) -> tuple[str, Records]:
    """Open a ``save_to_disk`` directory or a directory of data files (e.g. a hub snapshot)."""
    import datasets

    label = f"{src}[{split}]"
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = _load(src, split, lambda: datasets.load_from_disk(str(path)))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                available = ", ".join(loaded)
                raise DatasetError(src, f"no split {split!r} (available: {available}); set data.split to one of them")
            return label, _iter_dataset(loaded[split])
        return src, _iter_dataset(loaded)
    return label, _iter_dataset(_load(label, split, lambda: datasets.load_dataset(str(path), split=split)))


def _open_hub(src: str, split: str, config: str | None) -> tuple[str, Records]:
    """Open a hub id (offline: only from the local Hugging Face cache)."""
    import datasets

    label = f"{src}[{split}]"
    ds = _load(label, split, lambda: datasets.load_dataset(src, config, split=split), hub=True)
    return label, _iter_dataset(ds)


def _open_source(source: str | os.PathLike[str], split: str, config: str | None = None) -> tuple[str, Records]:
    """Resolve ``source`` (see module docstring) to ``(label, generator of (row_number, record))``."""
    src = os.fspath(source)
    if not src.strip():
        raise DatasetError(repr(src), "no dataset given; set data.path to a file, a directory or a hub id")
    path = Path(src).expanduser()
    if path.is_file():
        return src, _open_file(path, src)
    if path.is_dir():
        return _open_directory(path, src, split)
    if _looks_like_path(src):
        raise DatasetError(src, "no such file or directory; check data.path (relative to the working directory)")
    return _open_hub(src, split, config)


# --------------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------------


def _is_list(value: Any) -> bool:
    """Is ``value`` a JSON array (a list, or a tuple from other readers)?"""
    return isinstance(value, list | tuple)


def _record_kind(record: Mapping[str, Any]) -> str | None:
    """The kind whose fields ``record`` has (see :data:`KIND_FIELDS`), or ``None``."""
    if all(record.get(key) is not None for key in ("info", "summaries", "choice")):
        return "summarize_from_feedback"
    prompt, chosen, rejected = (record.get(key) for key in ("prompt", "chosen", "rejected"))
    if isinstance(prompt, str) and _is_list(chosen) and _is_list(rejected):
        return "ultrafeedback"
    if all(isinstance(v, str) for v in (prompt, chosen, rejected)) or all(
        _is_list(v) for v in (prompt, chosen, rejected)
    ):
        return "preference"
    if prompt is None and isinstance(chosen, str) and isinstance(rejected, str):
        return "hh_rlhf"
    if isinstance(prompt, str) and isinstance(record.get("completion"), str):
        return "tldr"
    return None


def _unknown_format(label: str, number: int, record: Mapping[str, Any]) -> DatasetError:
    """The error for a record in none of the known formats: its fields and every kind's."""
    fields = ", ".join(map(str, record)) or "none"
    expected = ", ".join(f"{kind} ({fields})" for kind, fields in KIND_FIELDS.items())
    return DatasetError(
        label, f"row {number}: not a known dataset format (fields: {fields}); expected one of: {expected}"
    )


def detect_kind(source: str | os.PathLike[str], split: str | None = None) -> str:
    """Which kind of :data:`LOADERS` the first record of ``source`` has the fields of.

    ``split`` (default ``"train"``) selects from directories and hub ids. Raises :class:`DatasetError` when the
    source cannot be opened, has no rows or its first record is in none of the formats (the message lists them).
    """
    label, records = _open_source(source, split or "train")
    with closing(records):
        first = next(records, None)
    if first is None:
        raise DatasetError(label, "no rows; point data.path at a non-empty dataset")
    number, record = first
    if not isinstance(record, Mapping):
        raise DataValidationError(label, number, ROW, f"expected a JSON object, got {type(record).__name__}")
    kind = _record_kind(record)
    if kind is None:
        raise _unknown_format(label, number, record)
    return kind


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
        if not _is_list(value):
            raise self.error(field, f"expected list, got {type(value).__name__}")
        return value

    def string(self, value: Any, field: str, *, allow_empty: bool = False) -> str:
        if value is None:
            raise self.error(field, "missing")
        if not isinstance(value, str):
            raise self.error(field, f"expected str, got {type(value).__name__}")
        if not allow_empty and not value.strip():
            raise self.error(field, "empty string" if value == "" else "whitespace-only string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a "\ud800"-style escape: valid JSON, but not encodable text
            raise self.error(field, f"invalid UTF-8: lone surrogate {value[exc.start]!r}") from None
        return value

    def optional_number(self, value: Any, field: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(field, f"expected a JSON number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise self.error(field, f"expected a finite number, got {value!r}")
        return float(value)

    def distinct(self, chosen: str, rejected: str, field: str = "rejected") -> None:
        if chosen.strip() == rejected.strip():
            raise IdenticalPairError(self.label, self.number, field, IDENTICAL)


IDENTICAL = "chosen and rejected are identical"


class IdenticalPairError(DataValidationError):
    """A pair row whose chosen and rejected responses are the same text (no preference to learn from).

    Raised by the row checks; :func:`_collect` skips such rows (counted) when asked to, else re-raises it with a hint
    naming ``data.skip_identical_pairs``.
    """


def _check_limit(limit: int | None) -> int | None:
    """``limit`` itself; :class:`ValueError` unless it is ``None`` or a non-negative int."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    return limit


Converter = Callable[[Mapping[str, Any], _Row], dict | None]


@dataclass(frozen=True)
class _Kind:
    """How a loader names its rows and which formats (see :func:`_record_kind`) it accepts."""

    prefix: str
    accepts: frozenset[str]
    fields: frozenset[str]


_KINDS: dict[str, _Kind] = {
    "tldr": _Kind("tldr", frozenset({"tldr"}), frozenset({"prompt", "completion"})),
    "summarize_from_feedback": _Kind(
        "sff", frozenset({"summarize_from_feedback"}), frozenset({"info", "summaries", "choice"})
    ),
    "ultrafeedback": _Kind("ufb", frozenset({"ultrafeedback"}), frozenset({"prompt", "chosen", "rejected"})),
    "preference": _Kind("pref", frozenset({"preference"}), frozenset({"prompt", "chosen", "rejected"})),
    "hh_rlhf": _Kind("hh", frozenset({"hh_rlhf", "preference"}), frozenset({"chosen", "rejected"})),
}


def _check_kind(kind: str, record: Mapping[str, Any], row: _Row) -> None:
    """Fail with a :class:`DatasetError` when the first record is another kind's, or no kind's, format.

    A record of no known format that still has one of ``kind``'s fields is left to the row checks, which name the
    missing or malformed field.
    """
    found = _record_kind(record)
    if found is None:
        if not _KINDS[kind].fields & set(record):
            raise _unknown_format(row.label, row.number, record)
        return
    if found not in _KINDS[kind].accepts:
        raise DatasetError(
            row.label,
            f"row {row.number}: not {kind} rows ({KIND_FIELDS[kind]}): looks like {found!r} rows "
            f"({KIND_FIELDS[found]}); set data.source={found}",
        )


def _collect(
    kind: str,
    source: str | os.PathLike[str],
    split: str,
    limit: int | None,
    convert: Converter,
    config: str | None = None,
    *,
    skip_identical: bool = False,
    stats: dict[str, int] | None = None,
) -> list[dict]:
    """Convert and validate rows from ``source`` until ``limit`` rows are produced.

    ``convert`` returns the row without its id, or ``None`` to skip a (valid but unusable) record. A pair whose
    chosen and rejected texts are identical is an error, or with ``skip_identical`` skipped. ``stats``, when given,
    receives ``rows_read``, ``skipped`` (records ``convert`` skipped) and ``skipped_identical``.
    """
    limit = _check_limit(limit)
    if limit == 0:
        return []
    label, records = _open_source(source, split, config)
    out: list[dict] = []
    seen = skipped = identical = 0
    with closing(records):
        for index, (number, record) in enumerate(records):
            seen = index + 1
            row = _Row(label, number)
            if not isinstance(record, Mapping):
                raise row.error(ROW, f"expected a JSON object, got {type(record).__name__}")
            if index == 0:
                _check_kind(kind, record, row)
            try:
                converted = convert(record, row)
            except IdenticalPairError as exc:
                if not skip_identical:
                    raise DataValidationError(
                        exc.path, exc.row, exc.field, f"{IDENTICAL} (data.skip_identical_pairs=true drops such rows)"
                    ) from None
                identical += 1
                continue
            if converted is None:
                skipped += 1
                continue
            out.append({"id": f"{_KINDS[kind].prefix}-{split}-{index:06d}", **converted})
            if limit is not None and len(out) >= limit:
                break
    if stats is not None:
        stats.update(rows_read=seen, skipped=skipped, skipped_identical=identical)
    if not out:
        if seen == 0:
            raise DatasetError(label, "no rows; point data.path at a non-empty dataset")
        raise DatasetError(label, f"no usable rows among {seen} (all skipped); check data.path and data.split")
    return out


def _scores(record: Mapping[str, Any], row: _Row) -> dict[str, float]:
    """The optional ``score_chosen`` / ``score_rejected`` (JSON numbers; strings are rejected), as floats."""
    out = {}
    for key in ("score_chosen", "score_rejected"):
        score = row.optional_number(record.get(key), key)
        if score is not None:
            out[key] = score
    return out


# --------------------------------------------------------------------------------------------------
# TL;DR (trl-lib/tldr)
# --------------------------------------------------------------------------------------------------


def _convert_tldr(record: Mapping[str, Any], row: _Row) -> dict:
    return {
        "prompt": row.string(record.get("prompt"), "prompt"),
        "completion": row.string(record.get("completion"), "completion"),
    }


def load_tldr(source: str, split: str = "train", limit: int | None = None, **options: Any) -> list[dict]:
    """Load ``trl-lib/tldr``-format data (``prompt``, ``completion``) as ``SFT_SCHEMA`` rows.

    Prompt and completion are kept verbatim (the completion usually starts with a space after
    ``"TL;DR:"``). Ids are ``"tldr-{split}-{index:06d}"``.
    """
    return _collect("tldr", source, split, limit, _convert_tldr, **options)


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
    """The TL;DR prompt layout of ``trl-lib/tldr`` (the policy's SFT prompts), byte for byte."""
    sub = subreddit.strip().removeprefix("r/")
    return f"SUBREDDIT: r/{sub}\n\nTITLE: {title.strip()}\n\nPOST: {post.strip()}\n\nTL;DR:"


def _sff_choice(record: Mapping[str, Any], row: _Row) -> int:
    choice = record.get("choice")
    if choice is None:
        raise row.error("choice", "missing")
    if isinstance(choice, bool) or not isinstance(choice, int):
        raise row.error("choice", f"expected int, got {type(choice).__name__}")
    if choice not in (0, 1):
        raise row.error("choice", f"expected 0 or 1, got {choice}")
    return choice


def _sff_texts(record: Mapping[str, Any], row: _Row) -> list[str]:
    summaries = row.sequence(record.get("summaries"), "summaries")
    if len(summaries) != 2:
        raise row.error("summaries", f"expected exactly 2 summaries, got {len(summaries)}")
    texts = []
    for i, summary in enumerate(summaries):
        s = row.mapping(summary, f"summaries[{i}]")
        texts.append(row.string(s.get("text"), f"summaries[{i}].text").strip())
    row.distinct(texts[0], texts[1], "summaries")
    return texts


def _convert_sff(record: Mapping[str, Any], row: _Row, *, skip_articles: bool) -> dict | None:
    info = row.mapping(record.get("info"), "info")
    if skip_articles and info.get("post") is None and isinstance(info.get("article"), str):
        return None  # CNN/DM article (validation split), not a Reddit post
    post = row.string(info.get("post"), "info.post")
    title = row.string(info.get("title"), "info.title", allow_empty=True)
    subreddit = row.string(info.get("subreddit"), "info.subreddit")
    texts = _sff_texts(record, row)
    choice = _sff_choice(record, row)
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
    **options: Any,
) -> list[dict]:
    """Load OpenAI summarize-from-feedback *comparisons* as ``PAIR_SCHEMA`` rows.

    Input columns: ``info`` (``post``, ``title``, ``subreddit``, optional ``id``), ``summaries`` (exactly
    2 dicts with ``text``, not identical) and ``choice`` (0 or 1, index of the preferred summary). The prompt is
    the TL;DR layout the policy sees in ``trl-lib/tldr``:
    ``"SUBREDDIT: r/{subreddit}\\n\\nTITLE: {title}\\n\\nPOST: {post}\\n\\nTL;DR:"`` (fields stripped);
    ``chosen`` / ``rejected`` are ``" " + text.strip()``. ``config`` is passed to ``load_dataset`` for hub ids only
    (the hub dataset ``openai/summarize_from_feedback`` needs ``"comparisons"``). With ``skip_articles``, CNN/DM
    rows (``info.post`` null, ``info.article`` set; present in the hub validation split) are skipped
    instead of rejected. Ids are ``"sff-{split}-{index:06d}"``.
    """

    def convert(record: Mapping[str, Any], row: _Row) -> dict | None:
        return _convert_sff(record, row, skip_articles=skip_articles)

    src = os.fspath(source)
    is_local = os.path.exists(os.path.expanduser(src))
    return _collect("summarize_from_feedback", source, split, limit, convert, None if is_local else config, **options)


# --------------------------------------------------------------------------------------------------
# Chat messages (ultrafeedback, conversational preference)
# --------------------------------------------------------------------------------------------------


def _message_list(value: Any, field: str, row: _Row) -> list[dict[str, str]]:
    """Validate a non-empty list of ``{"role", "content"}`` messages (only those keys are kept)."""
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
    return out


def _messages(value: Any, field: str, row: _Row) -> list[dict[str, str]]:
    """Validate a chat transcript; the last message must be a non-empty assistant message."""
    out = _message_list(value, field, row)
    last = len(out) - 1
    if out[last]["role"] != "assistant":
        raise row.error(f"{field}[{last}].role", f"last message must be from the assistant, got {out[last]['role']!r}")
    return out


# --------------------------------------------------------------------------------------------------
# HuggingFaceH4/ultrafeedback_binarized
# --------------------------------------------------------------------------------------------------


def _convert_ufb(record: Mapping[str, Any], row: _Row) -> dict:
    prompt = row.string(record.get("prompt"), "prompt")
    chosen = _messages(record.get("chosen"), "chosen", row)
    rejected = _messages(record.get("rejected"), "rejected", row)
    row.distinct(chosen[-1]["content"], rejected[-1]["content"])
    return {
        "prompt": prompt,
        "chosen": chosen[-1]["content"],
        "rejected": rejected[-1]["content"],
        "messages_chosen": chosen,
        "messages_rejected": rejected,
        **_scores(record, row),
    }


def load_ultrafeedback_binarized(
    source: str, split: str = "train_prefs", limit: int | None = None, **options: Any
) -> list[dict]:
    """Load ``HuggingFaceH4/ultrafeedback_binarized``-format data as ``PAIR_SCHEMA`` rows (kind ``"ultrafeedback"``).

    Input columns: ``prompt`` (str), ``chosen`` / ``rejected`` (lists of ``{"role", "content"}``
    messages ending with the assistant's reply), optional ``score_chosen`` / ``score_rejected`` (JSON numbers).
    ``chosen`` / ``rejected`` are the final assistant contents (not identical); the full transcripts are kept as
    ``messages_chosen`` / ``messages_rejected`` (only ``role`` and ``content``) for chat templates,
    and the scores as floats when present. Roles must be system/user/assistant and non-system
    contents non-empty. Ids are ``"ufb-{split}-{index:06d}"``.
    """
    return _collect("ultrafeedback", source, split, limit, _convert_ufb, **options)


#: The loader of kind ``"ultrafeedback"`` under its kind's name.
load_ultrafeedback = load_ultrafeedback_binarized


# --------------------------------------------------------------------------------------------------
# TRL preference format (explicit prompt; standard or conversational)
# --------------------------------------------------------------------------------------------------


def _conversational_pair(record: Mapping[str, Any], row: _Row) -> dict:
    prompt = _message_list(record.get("prompt"), "prompt", row)
    chosen = _messages(record.get("chosen"), "chosen", row)
    rejected = _messages(record.get("rejected"), "rejected", row)
    return {
        "prompt": "\n\n".join(m["content"] for m in prompt if m["content"]),
        "chosen": chosen[-1]["content"],
        "rejected": rejected[-1]["content"],
        "messages_prompt": prompt,
        "messages_chosen": prompt + chosen,
        "messages_rejected": prompt + rejected,
    }


def _convert_preference(record: Mapping[str, Any], row: _Row) -> dict:
    if _is_list(record.get("prompt")):
        out = _conversational_pair(record, row)
    else:
        out = {key: row.string(record.get(key), key) for key in ("prompt", "chosen", "rejected")}
    row.distinct(out["chosen"], out["rejected"])
    return {**out, **_scores(record, row)}


def load_preference(source: str, split: str = "train", limit: int | None = None, **options: Any) -> list[dict]:
    """Load TRL's explicit-prompt preference format as ``PAIR_SCHEMA`` rows (kind ``"preference"``).

    Standard rows have flat strings ``prompt``, ``chosen``, ``rejected`` (kept verbatim). Conversational rows have
    lists of ``{"role", "content"}`` messages: ``chosen`` / ``rejected`` end with an assistant message, whose content
    becomes ``chosen`` / ``rejected``; ``prompt`` is the prompt messages' non-empty contents joined by blank lines.
    Those keep ``messages_prompt`` and the full transcripts ``messages_chosen`` / ``messages_rejected`` (prompt
    messages followed by the completion's, as the ultrafeedback loader keeps them) for chat templates. Optional
    ``score_chosen`` / ``score_rejected`` must be JSON numbers and are kept as floats. ``chosen`` and ``rejected``
    must differ (after stripping). Ids are ``"pref-{split}-{index:06d}"``.
    """
    return _collect("preference", source, split, limit, _convert_preference, **options)


# --------------------------------------------------------------------------------------------------
# Anthropic/hh-rlhf (implicit prompt)
# --------------------------------------------------------------------------------------------------


def _split_transcript(text: str, field: str, row: _Row) -> tuple[str, str]:
    """Split an HH-RLHF transcript at its last ``"\\n\\nAssistant:"`` into ``(prompt, " " + reply)``."""
    cut = text.rfind(_ASSISTANT)
    if cut < 0:
        raise row.error(field, f"no {_ASSISTANT!r} marker (expected '\\n\\nHuman: ...\\n\\nAssistant: ...')")
    if _HUMAN not in text[:cut]:
        raise row.error(field, f"no {_HUMAN!r} marker before the last {_ASSISTANT!r}")
    end = cut + len(_ASSISTANT)
    reply = text[end:].strip()
    if not reply:
        raise row.error(field, f"empty reply after the last {_ASSISTANT!r}")
    if _HUMAN in reply:
        raise row.error(field, f"ends with a {_HUMAN!r} turn after the last {_ASSISTANT!r}")
    return text[:end], " " + reply


def _convert_hh(record: Mapping[str, Any], row: _Row) -> dict:
    if record.get("prompt") is not None:
        return _convert_preference(record, row)
    prompt, chosen = _split_transcript(row.string(record.get("chosen"), "chosen"), "chosen", row)
    rejected_prompt, rejected = _split_transcript(row.string(record.get("rejected"), "rejected"), "rejected", row)
    if rejected_prompt != prompt:
        raise row.error(
            "rejected", f"does not share the chosen transcript's prompt (the text up to the last {_ASSISTANT!r})"
        )
    row.distinct(chosen, rejected)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def load_hh_rlhf(source: str, split: str = "train", limit: int | None = None, **options: Any) -> list[dict]:
    """Load ``Anthropic/hh-rlhf``-format data as ``PAIR_SCHEMA`` rows (kind ``"hh_rlhf"``).

    Raw rows are ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}`` with an implicit prompt:
    each transcript is split at its last ``"\\n\\nAssistant:"``; ``prompt`` is the text up to and including that
    marker (it must be the same for both) and ``chosen`` / ``rejected`` are ``" " + reply.strip()`` (non-empty, not
    identical). Rows that have a ``prompt`` (TRL's explicit-prompt form, e.g. an already split copy) are converted
    as by :func:`load_preference`. Ids are ``"hh-{split}-{index:06d}"``.
    """
    return _collect("hh_rlhf", source, split, limit, _convert_hh, **options)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

LOADERS: dict[str, Callable[..., list[dict]]] = {
    "tldr": load_tldr,
    "summarize_from_feedback": load_summarize_from_feedback,
    "ultrafeedback": load_ultrafeedback_binarized,
    "preference": load_preference,
    "hh_rlhf": load_hh_rlhf,
}
_ALIASES = {"ultrafeedback_binarized": "ultrafeedback"}


def load_named(
    kind: str, source: str, split: str | None = None, limit: int | None = None, **options: Any
) -> list[dict]:
    """Dispatch to ``LOADERS[kind]`` (``"ultrafeedback_binarized"`` is an alias of ``"ultrafeedback"``).

    ``split=None`` uses that loader's default split; ``options`` (``skip_identical``, ``stats``) go to
    :func:`_collect`. Raises :class:`ValueError` listing the valid kinds when
    ``kind`` is unknown.
    """
    try:
        loader = LOADERS[_ALIASES.get(kind, kind)]
    except KeyError:
        raise ValueError(f"unknown dataset kind {kind!r}; valid kinds: {', '.join(sorted(LOADERS))}") from None
    if split is None:
        return loader(source, limit=limit, **options)
    return loader(source, split, limit, **options)
