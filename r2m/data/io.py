"""JSON / JSONL file I/O with atomic writes and row-level validation.

Every pipeline stage exchanges data as JSONL files whose rows follow one of the schemas below.
Readers fail loudly with :class:`DataValidationError`, whose message always names the file, the
1-based row (line) number and the offending field, so a bad row in a 100k-line file is easy to find.
Writers are atomic: the data is written to a temporary file in the destination directory and then
moved into place with :func:`os.replace`, so a crash mid-write never leaves a truncated file behind.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = [
    "PAIR_SCHEMA",
    "PROMPT_SCHEMA",
    "ROW",
    "SFT_SCHEMA",
    "DataValidationError",
    "DatasetError",
    "Schema",
    "check_fields",
    "iter_jsonl",
    "read_json",
    "read_jsonl",
    "write_json",
    "write_jsonl",
]

PathLike = str | os.PathLike[str]
Schema = Mapping[str, type | tuple[type, ...]]

#: Pseudo field name used for problems concerning a whole row (invalid JSON, not an object).
ROW = "<row>"

#: Supervised fine-tuning rows: the completion continues the prompt verbatim.
SFT_SCHEMA: dict[str, type] = {"id": str, "prompt": str, "completion": str}
#: Preference pairs: two completions of the same prompt, ``chosen`` preferred over ``rejected``.
PAIR_SCHEMA: dict[str, type] = {"id": str, "prompt": str, "chosen": str, "rejected": str}
#: Evaluation / RL prompts with a reference completion.
PROMPT_SCHEMA: dict[str, type] = {"id": str, "prompt": str, "reference": str}


class DataValidationError(ValueError):
    """A data row is malformed.

    The message is always ``"{path}: row {row}: field '{field}': {problem}"``; ``path`` may also be a
    dataset label such as ``"trl-lib/tldr[train]"`` and ``field`` may be a nested path such as
    ``"summaries[1].text"`` or :data:`ROW` for whole-row problems.
    """

    def __init__(self, path: PathLike, row: int, field: str, problem: str) -> None:
        self.path = os.fspath(path)
        self.row = row
        self.field = field
        self.problem = problem
        super().__init__(f"{self.path}: row {row}: field '{field}': {problem}")

    def __reduce__(self) -> tuple[Any, ...]:  # keep picklable (e.g. across Prefect task workers)
        return (type(self), (self.path, self.row, self.field, self.problem))


class DatasetError(ValueError):
    """A dataset source cannot be used as a whole (as opposed to one bad row: :class:`DataValidationError`).

    For example: the file or directory does not exist or cannot be read, its type is not supported, it is in none of
    the known dataset formats, a hub id is not available offline, the split does not exist, or it has no usable rows.
    The message is one line, ``"{source}: {problem}"``, where ``source`` is a file path or ``"{hub_id}[{split}]"`` and
    ``problem`` says what is wrong and what to do; whitespace runs in ``problem`` (newlines included) become one space.
    """

    def __init__(self, source: PathLike, problem: str) -> None:
        self.source = os.fspath(source)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.source}: {self.problem}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, like DataValidationError
        return (type(self), (self.source, self.problem))


def _type_name(types: type | tuple[type, ...]) -> str:
    if isinstance(types, tuple):
        return " | ".join(t.__name__ for t in types)
    return types.__name__


def _matches(value: Any, types: type | tuple[type, ...]) -> bool:
    """``isinstance`` with JSON-friendly rules: bools are not ints, ints are acceptable floats."""
    expected = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in expected
    if isinstance(value, int) and float in expected:
        return True
    return isinstance(value, expected)


def check_fields(
    row: Mapping[str, Any],
    required: Schema,
    *,
    path: PathLike,
    row_number: int,
    allow_empty_str: bool = False,
) -> None:
    """Validate that ``row`` has every field in ``required`` with the right type.

    String fields must be non-empty and not whitespace-only unless ``allow_empty_str`` is true.
    Raises :class:`DataValidationError` naming ``path``, ``row_number`` and the first bad field.
    """
    for field, types in required.items():
        if field not in row or (row[field] is None and not _matches(None, types)):
            raise DataValidationError(path, row_number, field, "missing")
        value = row[field]
        if not _matches(value, types):
            problem = f"expected {_type_name(types)}, got {type(value).__name__}"
            raise DataValidationError(path, row_number, field, problem)
        if isinstance(value, str) and not allow_empty_str and not value.strip():
            problem = "empty string" if value == "" else "whitespace-only string"
            raise DataValidationError(path, row_number, field, problem)


def _not_found(path: PathLike, what: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, f"{what} not found", os.fspath(path))


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file.

    Raises :class:`FileNotFoundError` naming the path, or :class:`DataValidationError` (field
    :data:`ROW`) for invalid UTF-8, invalid JSON or a line that is not a JSON object.
    """
    try:
        fh = open(path, "rb")  # binary: only b"\n" splits lines (not U+2028 etc.)
    except FileNotFoundError:
        raise _not_found(path, "JSONL file") from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataValidationError(path, lineno, ROW, f"invalid UTF-8: {exc.reason}") from exc
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                problem = f"invalid JSON: {exc.msg} (column {exc.colno})"
                raise DataValidationError(path, lineno, ROW, problem) from exc
            if not isinstance(obj, dict):
                problem = f"expected a JSON object, got {type(obj).__name__}"
                raise DataValidationError(path, lineno, ROW, problem)
            yield lineno, obj


def read_jsonl(
    path: PathLike,
    required: Schema | None = None,
    *,
    allow_empty_str: bool = False,
    stage_input: bool = False,
) -> list[dict]:
    """Read a JSONL file into a list of dicts, validating every row.

    Blank lines are skipped but still counted, so row numbers equal line numbers. Raises
    :class:`FileNotFoundError` (naming the path) for a missing file and :class:`DataValidationError`
    for invalid UTF-8 or JSON, a line that is not a JSON object, or (when ``required`` is given) a
    missing field, a value of the wrong type or an empty string field (unless ``allow_empty_str``).

    ``stage_input``: the file is what a stage trains or evaluates on, checked before the stage writes anything: an
    empty file is a :class:`DatasetError`; a repeated ``id`` and a pair whose ``chosen`` equals its ``rejected`` (no
    preference to learn) are a :class:`DataValidationError` naming the row.
    """
    rows: list[dict] = []
    first_row: dict[Any, int] = {}
    for lineno, obj in iter_jsonl(path):
        if required:
            check_fields(obj, required, path=path, row_number=lineno, allow_empty_str=allow_empty_str)
        if stage_input:
            if "id" in obj:
                if obj["id"] in first_row:
                    problem = f"duplicate id {obj['id']!r} (first at row {first_row[obj['id']]})"
                    raise DataValidationError(path, lineno, "id", problem)
                first_row[obj["id"]] = lineno
            if "chosen" in obj and obj.get("chosen") == obj.get("rejected"):
                raise DataValidationError(path, lineno, "rejected", "identical to 'chosen': the pair has no preference")
        rows.append(obj)
    if stage_input and not rows:
        raise DatasetError(path, "no rows: the stage has nothing to work on (rerun the prepare stage?)")
    return rows


def _atomic_write(path: PathLike, write: Callable[[IO[str]], Any]) -> Any:
    """Call ``write(fh)`` on a temp file next to ``path`` and move it into place on success.

    On any exception the temp file is removed and an existing ``path`` is left untouched.
    Returns whatever ``write`` returns.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            result = write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return result


def write_jsonl(path: PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """Atomically write ``rows`` as UTF-8 JSONL (one object per line); return the number written.

    Parent directories are created. If iterating ``rows`` or serialising one of them fails, the
    exception propagates and any previous file at ``path`` is left unchanged.
    """

    def _write(fh: IO[str]) -> int:
        count = 0
        for row in rows:
            if not isinstance(row, Mapping):
                got = type(row).__name__
                raise TypeError(f"{os.fspath(path)}: row {count + 1}: expected a dict, got {got}")
            fh.write(json.dumps(dict(row), ensure_ascii=False))
            fh.write("\n")
            count += 1
        return count

    return _atomic_write(path, _write)


def write_json(path: PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as UTF-8 JSON with ``indent=2`` and sorted keys (trailing newline)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    _atomic_write(path, lambda fh: fh.write(text))


def read_json(path: PathLike) -> Any:
    """Read a JSON file; :class:`FileNotFoundError` / :class:`DataValidationError` on problems."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise _not_found(path, "JSON file") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataValidationError(path, line, ROW, f"invalid UTF-8: {exc.reason}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problem = f"invalid JSON: {exc.msg} (column {exc.colno})"
        raise DataValidationError(path, exc.lineno, ROW, problem) from exc
