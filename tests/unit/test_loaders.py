"""Tests for r2m.data.loaders on small hand-made fixtures in the real datasets' formats (offline)."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import pytest  # noqa: E402

from r2m.data.io import PAIR_SCHEMA, PROMPT_SCHEMA, SFT_SCHEMA, DataValidationError, check_fields  # noqa: E402
from r2m.data.loaders import (  # noqa: E402
    LOADERS,
    load_named,
    load_summarize_from_feedback,
    load_tldr,
    load_ultrafeedback_binarized,
    tldr_prompts,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "datasets"
TLDR = FIXTURES / "tldr.jsonl"
SFF = FIXTURES / "summarize_from_feedback.jsonl"
UFB = FIXTURES / "ultrafeedback_binarized.jsonl"


@pytest.fixture(autouse=True)
def _offline_tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the datasets cache out of $HOME and make sure nothing tries the hub."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_records(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _assert_error(err: pytest.ExceptionInfo, name: str, row: int, field: str) -> None:
    msg = str(err.value)
    assert name in msg and f"row {row}:" in msg and f"field '{field}'" in msg, msg
    assert (err.value.row, err.value.field) == (row, field)


# ---------------------------------------------------------------------------------------------- TL;DR


def test_load_tldr_rows() -> None:
    rows = load_tldr(str(TLDR))
    assert len(rows) == 4
    assert rows[0] == {
        "id": "tldr-train-000000",
        "prompt": "SUBREDDIT: r/relationships\n\nTITLE: Should I text my ex?\n\n"
        "POST: We broke up a month ago and I still think about her every day.\n\nTL;DR:",
        "completion": " Broke up a month ago, still miss her, should I text?",
    }
    assert rows[3]["completion"] == " Going to Zürich, need café tips."
    for i, row in enumerate(rows, 1):
        check_fields(row, SFT_SCHEMA, path="out", row_number=i)
    assert [r["id"] for r in load_tldr(str(TLDR), split="test", limit=2)] == [
        "tldr-test-000000",
        "tldr-test-000001",
    ]


def test_tldr_prompts() -> None:
    prompts = tldr_prompts(load_tldr(str(TLDR), limit=3))
    assert prompts[2] == {
        "id": "tldr-train-000002",
        "prompt": "SUBREDDIT: r/cooking\n\nTITLE: Rice always sticky\n\n"
        "POST: No matter what I do my rice comes out sticky and mushy. Help?\n\nTL;DR:",
        "reference": "My rice is always mushy.",
    }
    assert all(set(p) == set(PROMPT_SCHEMA) for p in prompts)
    with pytest.raises(DataValidationError, match="row 1: field 'completion': missing"):
        tldr_prompts([{"id": "a", "prompt": "p"}])


def test_tldr_missing_completion(tmp_path: Path) -> None:
    records = _records(TLDR)
    del records[2]["completion"]
    path = _write_records(tmp_path / "no_completion.jsonl", records)
    with pytest.raises(DataValidationError) as err:
        load_tldr(str(path))
    _assert_error(err, "no_completion.jsonl", 3, "completion")
    assert str(err.value).endswith("missing")
    assert len(load_tldr(str(path), limit=2)) == 2  # rows past the limit are not read
    # Blank lines are skipped but counted: rows of JSONL files are reported by line number.
    lines = path.read_text(encoding="utf-8").splitlines()
    gappy = tmp_path / "gappy.jsonl"
    gappy.write_text("\n".join(["", lines[0], "  ", lines[1], lines[2], lines[3]]) + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError) as err:
        load_tldr(str(gappy))
    _assert_error(err, "gappy.jsonl", 5, "completion")
    assert [r["id"] for r in load_tldr(str(gappy), limit=2)] == ["tldr-train-000000", "tldr-train-000001"]


def test_tldr_wrong_type(tmp_path: Path) -> None:
    records = _records(TLDR)
    records[1]["completion"] = 42
    path = _write_records(tmp_path / "int_completion.jsonl", records)
    with pytest.raises(DataValidationError) as err:
        load_tldr(str(path))
    _assert_error(err, "int_completion.jsonl", 2, "completion")
    assert "expected str, got int" in str(err.value)


def test_tldr_invalid_json_line_falls_back_to_line_numbers(tmp_path: Path) -> None:
    lines = TLDR.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join([lines[0], "", lines[1], '{"prompt": "x", ']) + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError) as err:
        load_tldr(str(path))
    _assert_error(err, "broken.jsonl", 4, "<row>")
    assert "invalid JSON" in str(err.value)


def test_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "tldr.json"
    path.write_text(json.dumps(_records(TLDR)), encoding="utf-8")
    assert load_tldr(str(path)) == load_tldr(str(TLDR))


def test_empty_file_and_limits(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.jsonl: no rows"):
        load_tldr(str(empty))
    assert load_tldr(str(TLDR), limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        load_tldr(str(TLDR), limit=-1)


# ------------------------------------------------------------------------- summarize from feedback

SFF_EXPECTED_0 = {
    "id": "sff-train-000000",
    "prompt": "SUBREDDIT: r/relationships\nTITLE: Roommate and dishes\n"
    "POST: My roommate never does the dishes and it is driving me crazy.\nTL;DR:",
    "chosen": " My roommate is lazy about dishes, how do I bring it up?",
    "rejected": " Roommate never does dishes.",
}


def test_load_summarize_from_feedback_jsonl() -> None:
    rows = load_summarize_from_feedback(str(SFF))
    assert len(rows) == 3
    assert rows[0] == SFF_EXPECTED_0
    assert rows[1]["chosen"] == " Should I pay off my card with savings?"  # choice 0
    assert rows[1]["rejected"] == " Have savings and debt."
    assert rows[2]["prompt"].startswith("SUBREDDIT: r/running\nTITLE: Knee pain when running\n")  # no info.id
    assert all(set(r) == set(PAIR_SCHEMA) for r in rows)
    assert load_summarize_from_feedback(str(SFF), limit=1) == [SFF_EXPECTED_0]


def test_load_summarize_from_feedback_parquet(tmp_path: Path) -> None:
    path = tmp_path / "comparisons.parquet"
    datasets.Dataset.from_list(_records(SFF)).to_parquet(str(path))
    assert load_summarize_from_feedback(str(path)) == load_summarize_from_feedback(str(SFF))


@pytest.mark.parametrize(
    ("mutate", "row", "field", "problem"),
    [
        (lambda r: r.update(choice=2), 2, "choice", "expected 0 or 1, got 2"),
        (lambda r: r["summaries"][1].pop("text"), 2, "summaries[1].text", "missing"),
        (lambda r: r["summaries"][0].update(text=" "), 2, "summaries[0].text", "whitespace-only string"),
        (
            lambda r: r["summaries"].append({"text": "third"}),
            2,
            "summaries",
            "expected exactly 2 summaries, got 3",
        ),
        (lambda r: r["info"].pop("post"), 2, "info.post", "missing"),
    ],
)
def test_summarize_from_feedback_rejects_bad_rows(tmp_path: Path, mutate, row, field, problem) -> None:
    records = _records(SFF)
    mutate(records[row - 1])
    path = _write_records(tmp_path / "bad_sff.jsonl", records)
    with pytest.raises(DataValidationError) as err:
        load_summarize_from_feedback(str(path))
    _assert_error(err, "bad_sff.jsonl", row, field)
    assert str(err.value).endswith(problem)


def test_summarize_from_feedback_skips_cnndm_articles(tmp_path: Path) -> None:
    records = _records(SFF)
    article = {"id": "cnn1", "post": None, "title": "News", "subreddit": None, "article": "Some news text."}
    records.insert(0, {**records[0], "info": article})
    path = _write_records(tmp_path / "with_article.jsonl", records)
    rows = load_summarize_from_feedback(str(path))
    assert [r["id"] for r in rows] == ["sff-train-000001", "sff-train-000002", "sff-train-000003"]
    with pytest.raises(DataValidationError, match="row 1: field 'info.post': missing"):
        load_summarize_from_feedback(str(path), skip_articles=False)


# ------------------------------------------------------------------------- ultrafeedback binarized


def test_load_ultrafeedback_binarized() -> None:
    rows = load_ultrafeedback_binarized(str(UFB))
    assert len(rows) == 3
    assert rows[0] == {
        "id": "ufb-train_prefs-000000",
        "prompt": "What is 2 + 2?",
        "chosen": "2 + 2 = 4.",
        "rejected": "5",
        "messages_chosen": [
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "2 + 2 = 4."},
        ],
        "messages_rejected": [
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "5"},
        ],
        "score_chosen": 9.0,
        "score_rejected": 2.0,
    }
    assert rows[2]["chosen"] == "Bonjour" and rows[2]["messages_rejected"][0]["role"] == "system"
    assert len(load_ultrafeedback_binarized(str(UFB), limit=2)) == 2


@pytest.mark.parametrize(
    ("mutate", "row", "field", "problem"),
    [
        (
            lambda r: r["chosen"].pop(),
            2,
            "chosen[0].role",
            "last message must be from the assistant, got 'user'",
        ),
        (lambda r: r["rejected"][1].update(content=""), 1, "rejected[1].content", "empty string"),
        (lambda r: r["chosen"][2].update(content=7), 3, "chosen[2].content", "expected str, got int"),
        (lambda r: r["chosen"][0].update(role="bot"), 1, "chosen[0].role", "unknown role 'bot'"),
        (lambda r: r.update(rejected=[]), 1, "rejected", "empty message list"),
        (lambda r: r.update(prompt=""), 2, "prompt", "empty string"),
    ],
)
def test_ultrafeedback_rejects_bad_rows(tmp_path: Path, mutate, row, field, problem) -> None:
    records = _records(UFB)
    mutate(records[row - 1])
    path = _write_records(tmp_path / "bad_ufb.jsonl", records)
    with pytest.raises(DataValidationError) as err:
        load_ultrafeedback_binarized(str(path))
    _assert_error(err, "bad_ufb.jsonl", row, field)
    assert problem in str(err.value)


def test_hub_snapshot_directory(tmp_path: Path) -> None:
    """A local copy of the hub layout (data/{split}-00000-of-00001.parquet) selects splits by name."""
    snap = tmp_path / "ultrafeedback_binarized"
    (snap / "data").mkdir(parents=True)
    records = _records(UFB)
    datasets.Dataset.from_list(records).to_parquet(str(snap / "data" / "train_prefs-00000-of-00001.parquet"))
    datasets.Dataset.from_list(records[:1]).to_parquet(str(snap / "data" / "test_prefs-00000-of-00001.parquet"))
    assert len(load_ultrafeedback_binarized(str(snap))) == 3
    test_rows = load_ultrafeedback_binarized(str(snap), split="test_prefs")
    assert [r["id"] for r in test_rows] == ["ufb-test_prefs-000000"]
    with pytest.raises(ValueError, match=r"ultrafeedback_binarized\[nope\]"):
        load_ultrafeedback_binarized(str(snap), split="nope")


# ---------------------------------------------------------------------- sources, registry, hub ids


def test_save_to_disk_directory(tmp_path: Path) -> None:
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(_records(TLDR)),
            "validation": datasets.Dataset.from_list(_records(TLDR)[:2]),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert load_tldr(str(tmp_path / "dd")) == load_tldr(str(TLDR))
    assert len(load_tldr(str(tmp_path / "dd"), split="validation")) == 2
    with pytest.raises(ValueError, match="no split 'test'.*train, validation"):
        load_tldr(str(tmp_path / "dd"), split="test")
    bad = datasets.Dataset.from_list([{"prompt": "p", "completion": ""}])
    bad.save_to_disk(str(tmp_path / "single"))
    with pytest.raises(DataValidationError, match=r"single: row 1: field 'completion': empty string"):
        load_tldr(str(tmp_path / "single"))


def test_missing_path_and_bad_extension(tmp_path: Path) -> None:
    for missing in (str(tmp_path / "nope"), "./nope.jsonl", "data/nope.parquet"):
        with pytest.raises(FileNotFoundError, match="nope"):
            load_tldr(missing)
    csv = tmp_path / "rows.csv"
    csv.write_text("prompt,completion\n")
    with pytest.raises(ValueError, match=r"rows\.csv: unsupported file type '\.csv'"):
        load_tldr(str(csv))


def test_hub_id_calls_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return datasets.Dataset.from_list([{"prompt": "p", "completion": None}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(DataValidationError) as err:
        load_tldr("trl-lib/tldr", split="validation")
    assert str(err.value) == "trl-lib/tldr[validation]: row 1: field 'completion': missing"
    with pytest.raises(DataValidationError):
        load_summarize_from_feedback("openai/summarize_from_feedback")
    assert calls == [
        ("trl-lib/tldr", None, {"split": "validation"}),
        ("openai/summarize_from_feedback", "comparisons", {"split": "train"}),
    ]


def test_load_named() -> None:
    assert set(LOADERS) == {"tldr", "summarize_from_feedback", "ultrafeedback_binarized"}
    assert load_named("tldr", str(TLDR), limit=1) == load_tldr(str(TLDR), limit=1)
    assert load_named("ultrafeedback_binarized", str(UFB))[0]["id"] == "ufb-train_prefs-000000"
    assert load_named("summarize_from_feedback", str(SFF), "valid", 1)[0]["id"] == "sff-valid-000000"
    with pytest.raises(ValueError, match="unknown dataset kind 'hh'.*summarize_from_feedback, tldr"):
        load_named("hh", str(TLDR))
