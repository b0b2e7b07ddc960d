"""Tests for r2m.data.io: JSONL/JSON round trips, validation messages and atomic writes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from r2m.data.io import (
    PAIR_SCHEMA,
    PROMPT_SCHEMA,
    SFT_SCHEMA,
    DataValidationError,
    read_json,
    read_jsonl,
    write_json,
    write_jsonl,
)


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _sft(i: int) -> dict:
    return {"id": f"r{i}", "prompt": f"prompt {i}", "completion": f" completion {i}"}


def test_schemas() -> None:
    assert SFT_SCHEMA == {"id": str, "prompt": str, "completion": str}
    assert PAIR_SCHEMA == {"id": str, "prompt": str, "chosen": str, "rejected": str}
    assert PROMPT_SCHEMA == {"id": str, "prompt": str, "reference": str}


def test_jsonl_round_trip_unicode_and_parent_dirs(tmp_path: Path) -> None:
    rows = [_sft(0), {"id": "u", "prompt": "Zürich café — 東京\nline2", "completion": "\u2028ok"}]
    path = tmp_path / "a" / "b" / "rows.jsonl"
    assert write_jsonl(path, iter(rows)) == 2
    text = path.read_text(encoding="utf-8")
    assert text.count("\n") == 2 and text.endswith("\n")
    assert "Zürich" in text  # UTF-8, not \u escapes
    assert read_jsonl(path, SFT_SCHEMA) == rows
    assert [p.name for p in path.parent.iterdir()] == ["rows.jsonl"]  # no temp files left


def test_write_jsonl_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    assert write_jsonl(path, []) == 0
    assert path.read_text() == ""
    assert read_jsonl(path) == []


def test_blank_lines_skipped_but_counted(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "blank.jsonl", [json.dumps(_sft(0)), "", "   ", json.dumps({"id": "x"})])
    with pytest.raises(DataValidationError) as err:
        read_jsonl(path, SFT_SCHEMA)
    assert err.value.row == 4
    assert err.value.field == "prompt"
    assert str(err.value) == f"{path}: row 4: field 'prompt': missing"
    assert len(read_jsonl(path)) == 2


def test_invalid_json_line(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "broken.jsonl", [json.dumps(_sft(0)), json.dumps(_sft(1)), '{"id": "x",'])
    with pytest.raises(DataValidationError) as err:
        read_jsonl(path)
    msg = str(err.value)
    assert "broken.jsonl" in msg and "row 3" in msg and "invalid JSON" in msg
    assert (err.value.path, err.value.row, err.value.field) == (str(path), 3, "<row>")


def test_non_object_line(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "list.jsonl", [json.dumps(_sft(0)), "[1, 2]"])
    with pytest.raises(
        DataValidationError, match=r"list\.jsonl: row 2: field '<row>': expected a JSON object, got list"
    ):
        read_jsonl(path)


def test_wrong_type(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "types.jsonl", [json.dumps({**_sft(0), "completion": 5})])
    with pytest.raises(DataValidationError) as err:
        read_jsonl(path, SFT_SCHEMA)
    assert str(err.value) == f"{path}: row 1: field 'completion': expected str, got int"


def test_null_is_missing(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "null.jsonl", [json.dumps({**_sft(0), "prompt": None})])
    with pytest.raises(DataValidationError, match="row 1: field 'prompt': missing"):
        read_jsonl(path, SFT_SCHEMA)


def test_empty_string(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "empty.jsonl", [json.dumps(_sft(0)), json.dumps({**_sft(1), "completion": ""})])
    with pytest.raises(DataValidationError, match="empty.jsonl: row 2: field 'completion': empty string"):
        read_jsonl(path, SFT_SCHEMA)
    assert read_jsonl(path, SFT_SCHEMA, allow_empty_str=True)[1]["completion"] == ""
    ws = _write_lines(tmp_path / "ws.jsonl", [json.dumps({**_sft(1), "prompt": " \n"})])
    with pytest.raises(DataValidationError, match="field 'prompt': whitespace-only string"):
        read_jsonl(ws, SFT_SCHEMA)


def test_type_rules(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "nums.jsonl", [json.dumps({"n": 1, "x": 2, "s": "a"})])
    assert read_jsonl(path, {"n": int, "x": float, "s": (str, int)})[0]["x"] == 2
    boolean = _write_lines(tmp_path / "bool.jsonl", [json.dumps({"n": True})])
    with pytest.raises(DataValidationError, match="field 'n': expected int, got bool"):
        read_jsonl(boolean, {"n": int})
    with pytest.raises(DataValidationError) as err:
        read_jsonl(boolean, {"n": (str, int)})
    assert str(err.value).endswith("field 'n': expected str | int, got bool")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_json(tmp_path / "nope.json")


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": "ok"}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataValidationError, match="row 2: field '<row>': invalid UTF-8"):
        read_jsonl(path)


def test_atomic_write_keeps_previous_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [_sft(0), _sft(1)])
    before = path.read_bytes()

    def exploding():
        yield _sft(2)
        yield _sft(3)
        raise RuntimeError("boom mid-write")

    with pytest.raises(RuntimeError, match="boom"):
        write_jsonl(path, exploding())
    assert path.read_bytes() == before
    with pytest.raises(TypeError):
        write_jsonl(path, [_sft(4), {"id": object()}])  # not JSON serialisable
    with pytest.raises(TypeError, match="row 2: expected a dict"):
        write_jsonl(path, [_sft(4), ["not", "a", "dict"]])  # type: ignore[list-item]
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


def test_atomic_write_keeps_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [_sft(0)])
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o640)
    write_jsonl(path, [_sft(1)])
    assert path.stat().st_mode & 0o777 == 0o640
    assert read_jsonl(path) == [_sft(1)]


def test_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "metrics.json"
    write_json(path, {"b": 1, "a": {"d": [1, 2], "c": "é"}})
    assert path.read_text(encoding="utf-8") == (
        '{\n  "a": {\n    "c": "é",\n    "d": [\n      1,\n      2\n    ]\n  },\n  "b": 1\n}\n'
    )
    assert read_json(path) == {"a": {"c": "é", "d": [1, 2]}, "b": 1}
    write_json(path, [1])
    assert read_json(path) == [1]


def test_read_json_invalid(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "a": 1,\n  "b": \n}\n')
    with pytest.raises(DataValidationError, match=r"bad\.json: row 4: field '<row>': invalid JSON"):
        read_json(path)


def test_error_is_value_error_and_picklable() -> None:
    err = DataValidationError("f.jsonl", 7, "summaries[1].text", "missing")
    assert isinstance(err, ValueError)
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.path, clone.row, clone.field, str(clone)) == (
        "f.jsonl",
        7,
        "summaries[1].text",
        "f.jsonl: row 7: field 'summaries[1].text': missing",
    )
