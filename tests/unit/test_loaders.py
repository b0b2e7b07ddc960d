"""Tests for r2m.data.loaders on small hand-made fixtures in the real datasets' formats (offline)."""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import pytest  # noqa: E402

from r2m.data.io import (  # noqa: E402
    PAIR_SCHEMA,
    PROMPT_SCHEMA,
    SFT_SCHEMA,
    DatasetError,
    DataValidationError,
    check_fields,
)
from r2m.data.loaders import (  # noqa: E402
    COMPLETION_KINDS,
    KIND_FIELDS,
    LOADERS,
    PAIR_KINDS,
    IdenticalPairError,
    detect_kind,
    load_hh_rlhf,
    load_named,
    load_preference,
    load_summarize_from_feedback,
    load_tldr,
    load_ultrafeedback,
    load_ultrafeedback_binarized,
    tldr_prompts,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "datasets"
TLDR = FIXTURES / "tldr.jsonl"
SFF = FIXTURES / "summarize_from_feedback.jsonl"
UFB = FIXTURES / "ultrafeedback_binarized.jsonl"
PREF = FIXTURES / "preference.jsonl"
PREF_CONV = FIXTURES / "preference_conversational.jsonl"
HH = FIXTURES / "hh_rlhf.jsonl"


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


def test_tldr_invalid_json_line_names_its_line(tmp_path: Path) -> None:
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
    with pytest.raises(DatasetError, match="empty.jsonl: no rows; point data.path at a non-empty dataset"):
        load_tldr(str(empty))
    assert load_tldr(str(TLDR), limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        load_tldr(str(TLDR), limit=-1)


# ------------------------------------------------------------------------- summarize from feedback

SFF_EXPECTED_0 = {
    "id": "sff-train-000000",
    "prompt": "SUBREDDIT: r/relationships\n\nTITLE: Roommate and dishes\n\n"
    "POST: My roommate never does the dishes and it is driving me crazy.\n\nTL;DR:",
    "chosen": " My roommate is lazy about dishes, how do I bring it up?",
    "rejected": " Roommate never does dishes.",
}


def test_load_summarize_from_feedback_jsonl() -> None:
    rows = load_summarize_from_feedback(str(SFF))
    assert len(rows) == 3
    assert rows[0] == SFF_EXPECTED_0
    assert rows[1]["chosen"] == " Should I pay off my card with savings?"  # choice 0
    assert rows[1]["rejected"] == " Have savings and debt."
    assert rows[2]["prompt"].startswith("SUBREDDIT: r/running\n\nTITLE: Knee pain when running\n\n")  # no info.id
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
    with pytest.raises(DatasetError, match=r"ultrafeedback_binarized\[nope\]: unknown split 'nope'.*data\.split"):
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
    with pytest.raises(DatasetError, match="no split 'test'.*train, validation"):
        load_tldr(str(tmp_path / "dd"), split="test")
    bad = datasets.Dataset.from_list([{"prompt": "p", "completion": ""}])
    bad.save_to_disk(str(tmp_path / "single"))
    with pytest.raises(DataValidationError, match=r"single: row 1: field 'completion': empty string"):
        load_tldr(str(tmp_path / "single"))


def test_missing_path_and_bad_extension(tmp_path: Path) -> None:
    for missing in (str(tmp_path / "nope"), "./nope.jsonl", "data/nope.parquet"):
        with pytest.raises(DatasetError, match=r"nope.*: no such file or directory; check data\.path"):
            load_tldr(missing)
    csv = tmp_path / "rows.csv"
    csv.write_text("prompt,completion\n")
    with pytest.raises(DatasetError, match=r"rows\.csv: unsupported file type '\.csv'; use a \.json, \.jsonl"):
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
    with pytest.raises(DatasetError, match=r"summarize_from_feedback\[train\]: row 1: not a known dataset format"):
        load_summarize_from_feedback("openai/summarize_from_feedback")
    assert calls == [
        ("trl-lib/tldr", None, {"split": "validation"}),
        ("openai/summarize_from_feedback", "comparisons", {"split": "train"}),
    ]


def test_load_named() -> None:
    assert set(LOADERS) == {"tldr", "summarize_from_feedback", "ultrafeedback", "preference", "hh_rlhf"}
    assert PAIR_KINDS | COMPLETION_KINDS == set(LOADERS) and not PAIR_KINDS & COMPLETION_KINDS
    assert set(KIND_FIELDS) == set(LOADERS)
    assert load_named("tldr", str(TLDR), limit=1) == load_tldr(str(TLDR), limit=1)
    assert load_named("ultrafeedback", str(UFB))[0]["id"] == "ufb-train_prefs-000000"
    assert load_named("ultrafeedback_binarized", str(UFB)) == load_ultrafeedback(str(UFB))  # alias
    assert load_named("preference", str(PREF), limit=1)[0]["id"] == "pref-train-000000"
    assert load_named("hh_rlhf", str(HH), "test")[2]["id"] == "hh-test-000002"
    assert load_named("summarize_from_feedback", str(SFF), "valid", 1)[0]["id"] == "sff-valid-000000"
    with pytest.raises(ValueError, match="unknown dataset kind 'hh'.*summarize_from_feedback, tldr"):
        load_named("hh", str(TLDR))


def test_pair_and_completion_kinds_yield_their_schemas() -> None:
    sources = {"tldr": TLDR, "summarize_from_feedback": SFF, "ultrafeedback": UFB, "preference": PREF, "hh_rlhf": HH}
    for kind, path in sources.items():
        schema = PAIR_SCHEMA if kind in PAIR_KINDS else SFT_SCHEMA
        for i, row in enumerate(load_named(kind, str(path)), 1):
            check_fields(row, schema, path=kind, row_number=i)


# ------------------------------------------------------------------------------ TL;DR prompt layout


def test_sff_prompt_has_the_tldr_layout(tmp_path: Path) -> None:
    """An sff comparison about a tldr fixture's post gives that row's prompt byte for byte."""
    tldr_prompt = load_tldr(str(TLDR), limit=1)[0]["prompt"]
    record = {
        "info": {
            "id": "t3_x",
            "post": "We broke up a month ago and I still think about her every day.\n",
            "title": " Should I text my ex?",
            "subreddit": "r/relationships",
        },
        "summaries": [{"text": "Miss my ex, text her?"}, {"text": "Broke up, still miss her."}],
        "choice": 0,
    }
    path = _write_records(tmp_path / "same_post.jsonl", [record])
    sff_row = load_summarize_from_feedback(str(path))[0]
    assert sff_row["prompt"] == tldr_prompt
    assert sff_row["chosen"] == " Miss my ex, text her?"  # completions follow "TL;DR:" after one space
    layout = re.compile(r"SUBREDDIT: r/[^\n]+\n\nTITLE: [^\n]*\n\nPOST: .+\n\nTL;DR:", re.DOTALL)
    prompts = [r["prompt"] for r in load_tldr(str(TLDR))] + [
        r["prompt"] for r in load_summarize_from_feedback(str(SFF))
    ]
    assert all(layout.fullmatch(p) for p in prompts), prompts


# --------------------------------------------------------------------------------- TRL preference


def test_load_preference_standard() -> None:
    rows = load_preference(str(PREF))
    assert rows[0] == {
        "id": "pref-train-000000",
        "prompt": "The capital of France is",
        "chosen": " Paris.",
        "rejected": " Lyon.",
        "score_chosen": 9.0,
        "score_rejected": 3.5,
    }
    assert (type(rows[1]["score_chosen"]), rows[1]["score_chosen"]) == (float, 8.0)  # int in the file
    assert rows[1]["chosen"].startswith("Crimson leaves drifting\nwhispers")  # kept verbatim
    assert set(rows[2]) == {"id", "prompt", "chosen", "rejected"}  # no scores in the file, none in the row
    assert [r["id"] for r in load_preference(str(PREF), split="test", limit=2)] == [
        "pref-test-000000",
        "pref-test-000001",
    ]


def test_load_preference_conversational() -> None:
    rows = load_preference(str(PREF_CONV))
    assert rows[0] == {
        "id": "pref-train-000000",
        "prompt": "What color is the sky?",
        "chosen": "It is blue.",
        "rejected": "It is green.",
        "messages_prompt": [{"role": "user", "content": "What color is the sky?"}],
        "messages_chosen": [
            {"role": "user", "content": "What color is the sky?"},
            {"role": "assistant", "content": "It is blue."},
        ],
        "messages_rejected": [
            {"role": "user", "content": "What color is the sky?"},
            {"role": "assistant", "content": "It is green."},
        ],
    }
    assert rows[1]["prompt"] == "You are a concise assistant.\n\nHow many legs does a spider have?"
    assert rows[1]["messages_rejected"][0]["role"] == "system" and rows[1]["rejected"] == "Six."
    assert (rows[1]["score_chosen"], rows[1]["score_rejected"]) == (7.5, 1.0)


@pytest.mark.parametrize(
    ("mutate", "field", "problem"),
    [
        (lambda r: r.update(chosen=[]), "chosen", "empty message list"),
        (lambda r: r["rejected"][0].update(role="user"), "rejected[0].role", "last message must be from the assistant"),
        (lambda r: r.update(chosen="It is blue."), "chosen", "expected list, got str"),
        (lambda r: r["prompt"][0].pop("content"), "prompt[0].content", "missing"),
    ],
)
def test_conversational_preference_rejects_bad_rows(tmp_path: Path, mutate, field, problem) -> None:
    records = _records(PREF_CONV)
    mutate(records[0])
    path = _write_records(tmp_path / "bad_conv.jsonl", records)
    with pytest.raises(DataValidationError) as err:
        load_preference(str(path))
    _assert_error(err, "bad_conv.jsonl", 1, field)
    assert problem in str(err.value)


# ----------------------------------------------------------------------------------- HH-RLHF


def test_load_hh_rlhf() -> None:
    rows = load_hh_rlhf(str(HH))
    assert rows[0] == {
        "id": "hh-train-000000",
        "prompt": "\n\nHuman: What are some cuss words in english?\n\nAssistant:",
        "chosen": " I'd rather not list swear words, but I can explain why people use strong language.",
        "rejected": " Here's a list of them.",
    }
    # Multi-turn: split at the LAST assistant marker, the earlier turns belong to the prompt.
    assert rows[1]["prompt"].endswith("\n\nHuman: yes they did\n\nAssistant:")
    assert rows[1]["prompt"].count("\n\nAssistant:") == 2
    assert rows[1]["rejected"] == " You're right, they did."
    # Leading whitespace becomes one space (two in the file), the trailing newline goes.
    assert rows[2]["chosen"] == ' Sure! "The Martian" by Andy Weir is gripping and funny.'


def test_hh_rlhf_accepts_the_flat_form(tmp_path: Path) -> None:
    flat = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in load_hh_rlhf(str(HH))]
    path = _write_records(tmp_path / "hh_flat.jsonl", flat)
    assert load_hh_rlhf(str(path)) == load_hh_rlhf(str(HH))


@pytest.mark.parametrize(
    ("mutate", "field", "problem"),
    [
        (
            lambda r: r.update(rejected=r["rejected"].replace("cuss words", "swear words")),
            "rejected",
            "does not share the chosen transcript's prompt",
        ),
        (lambda r: r.update(chosen="I'd rather not."), "chosen", "no '\\n\\nAssistant:' marker"),
        (
            lambda r: r.update(rejected="\n\nAssistant: Here's a list of them."),
            "rejected",
            "no '\\n\\nHuman:' marker before the last '\\n\\nAssistant:'",
        ),
        (lambda r: r.update(chosen=r["chosen"].split("Assistant:")[0] + "Assistant:  "), "chosen", "empty reply"),
        (lambda r: r.update(rejected=None), "rejected", "missing"),
    ],
)
def test_hh_rlhf_rejects_bad_rows(tmp_path: Path, mutate, field, problem) -> None:
    records = _records(HH)
    mutate(records[0])
    path = _write_records(tmp_path / "bad_hh.jsonl", records)
    with pytest.raises(DataValidationError) as err:
        load_hh_rlhf(str(path))
    _assert_error(err, "bad_hh.jsonl", 1, field)
    assert problem in str(err.value)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------ checks of every pair loader


def _identical_sff(r: dict) -> None:
    r["summaries"][1]["text"] = " " + r["summaries"][0]["text"].strip() + "\n"


def _identical_ufb(r: dict) -> None:
    r["rejected"][-1]["content"] = r["chosen"][-1]["content"] + " "


def _identical_pref(r: dict) -> None:
    r["rejected"] = r["chosen"].strip()


def _identical_hh(r: dict) -> None:
    r["rejected"] = r["chosen"] + "\n"


@pytest.mark.parametrize(
    ("loader", "fixture", "mutate", "field"),
    [
        (load_summarize_from_feedback, SFF, _identical_sff, "summaries"),
        (load_ultrafeedback_binarized, UFB, _identical_ufb, "rejected"),
        (load_preference, PREF, _identical_pref, "rejected"),
        (load_hh_rlhf, HH, _identical_hh, "rejected"),
    ],
)
def test_pair_loaders_reject_identical_chosen_and_rejected(tmp_path: Path, loader, fixture, mutate, field) -> None:
    records = _records(fixture)
    mutate(records[1])
    path = _write_records(tmp_path / "same.jsonl", records)
    with pytest.raises(DataValidationError) as err:
        loader(str(path))
    _assert_error(err, "same.jsonl", 2, field)
    assert str(err.value).endswith("chosen and rejected are identical (data.skip_identical_pairs=true drops such rows)")
    assert not isinstance(err.value, IdenticalPairError)  # the hint-bearing error, not the internal one
    stats: dict[str, int] = {}
    rows = loader(str(path), skip_identical=True, stats=stats)
    assert len(rows) == len(records) - 1
    assert stats == {"rows_read": len(records), "skipped": 0, "skipped_identical": 1}
    assert all(r["chosen"].strip() != r["rejected"].strip() for r in rows)
    # the remaining rows keep their source index in their ids (row 2 = index 1 is the one missing)
    assert [r["id"].rsplit("-", 1)[1] for r in rows] == [f"{i:06d}" for i in range(len(records)) if i != 1]


@pytest.mark.parametrize(("loader", "fixture"), [(load_ultrafeedback_binarized, UFB), (load_preference, PREF)])
@pytest.mark.parametrize("key", ["score_chosen", "score_rejected"])
def test_string_scores_are_rejected(tmp_path: Path, loader, fixture, key) -> None:
    """JSONL is read without pyarrow: a string score stays a string and is an error (no silent conversion)."""
    records = _records(fixture)
    records[1][key] = "8.5"
    path = _write_records(tmp_path / "str_score.jsonl", records)
    with pytest.raises(DataValidationError) as err:
        loader(str(path))
    _assert_error(err, "str_score.jsonl", 2, key)
    assert str(err.value).endswith("expected a JSON number, got str '8.5'")
    records[1][key] = float("nan")
    with pytest.raises(DataValidationError, match=f"row 2: field '{key}': expected a finite number"):
        loader(str(_write_records(tmp_path / "nan_score.jsonl", records)))


def test_jsonl_values_keep_their_json_types(tmp_path: Path) -> None:
    """A numeric-looking string completion is not turned into a number (nor the other way round)."""
    path = _write_records(tmp_path / "digits.jsonl", [{"prompt": "Count: 1, 2,", "completion": " 3"}])
    assert load_tldr(str(path))[0]["completion"] == " 3"
    path = _write_records(
        tmp_path / "number.jsonl", [{"prompt": "p", "completion": " a"}, {"prompt": "p", "completion": 3}]
    )
    with pytest.raises(DataValidationError, match="number.jsonl: row 2: field 'completion': expected str, got int"):
        load_tldr(str(path))


# --------------------------------------------------------------------------- encodings, JSON layouts


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_invalid_utf8_names_file_and_line(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"latin1{suffix}"
    good = TLDR.read_bytes().splitlines()[0]
    path.write_bytes(good + b"\n" + b'{"prompt": "Caf\xe9 in Z\xfcrich?", "completion": " Coffee."}\n')
    with pytest.raises(DataValidationError) as err:
        load_tldr(str(path))
    _assert_error(err, f"latin1{suffix}", 2, "<row>")
    assert "invalid UTF-8" in str(err.value)


def test_lone_surrogate_escape_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"prompt": "p", "completion": " bad \\ud800 text"}\n', encoding="utf-8")
    with pytest.raises(DataValidationError) as err:
        load_tldr(str(path))
    _assert_error(err, "surrogate.jsonl", 1, "completion")
    assert "invalid UTF-8: lone surrogate" in str(err.value)


def test_json_file_layouts(tmp_path: Path) -> None:
    record = _records(TLDR)[0]
    single = tmp_path / "one.json"
    single.write_text(json.dumps(record, indent=2), encoding="utf-8")  # one pretty-printed row object
    assert load_tldr(str(single)) == load_tldr(str(TLDR), limit=1)
    lines = tmp_path / "lines.json"  # JSON lines under a .json name
    lines.write_bytes(TLDR.read_bytes())
    assert load_tldr(str(lines)) == load_tldr(str(TLDR))
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"prompt": "p", "completion": " c"},\n{"prompt": \n]\n', encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"broken\.json: row 4: field '<row>': invalid JSON"):
        load_tldr(str(broken))


# ------------------------------------------------------------------------------ format detection


def test_detect_kind_of_every_fixture(tmp_path: Path) -> None:
    assert detect_kind(str(TLDR)) == "tldr"
    assert detect_kind(str(SFF)) == "summarize_from_feedback"
    assert detect_kind(str(UFB)) == "ultrafeedback"
    assert detect_kind(str(PREF)) == "preference"
    assert detect_kind(str(PREF_CONV)) == "preference"
    assert detect_kind(str(HH)) == "hh_rlhf"
    parquet = tmp_path / "hh.parquet"
    datasets.Dataset.from_list(_records(HH)).to_parquet(str(parquet))
    assert detect_kind(str(parquet)) == "hh_rlhf"


def test_unknown_format(tmp_path: Path) -> None:
    path = _write_records(tmp_path / "x.jsonl", [{"a": 1, "b": "two"}])
    expected = (
        f"{path}: row 1: not a known dataset format (fields: a, b); expected one of: tldr (prompt, completion), "
        "summarize_from_feedback (info, summaries, choice), ultrafeedback (prompt, chosen/rejected message lists), "
        "preference (prompt, chosen, rejected), hh_rlhf (chosen, rejected transcripts, no prompt)"
    )
    with pytest.raises(DatasetError) as err:
        detect_kind(str(path))
    assert str(err.value) == expected
    for kind in LOADERS:
        with pytest.raises(DatasetError) as err:
            load_named(kind, str(path))
        assert str(err.value) == expected
    with pytest.raises(DatasetError, match="empty.jsonl: no rows"):
        detect_kind(str(_write_records(tmp_path / "empty.jsonl", [])))


@pytest.mark.parametrize(
    ("kind", "fixture", "looks_like"),
    [
        ("ultrafeedback", PREF, "preference"),
        ("preference", UFB, "ultrafeedback"),
        ("preference", HH, "hh_rlhf"),
        ("tldr", SFF, "summarize_from_feedback"),
        ("summarize_from_feedback", TLDR, "tldr"),
        ("hh_rlhf", UFB, "ultrafeedback"),
    ],
)
def test_wrong_kind_names_the_kind_it_looks_like(kind: str, fixture: Path, looks_like: str) -> None:
    with pytest.raises(DatasetError) as err:
        load_named(kind, str(fixture))
    msg = str(err.value)
    assert msg.startswith(f"{fixture}: row 1: not {kind} rows (")
    assert msg.endswith(f"looks like '{looks_like}' rows ({KIND_FIELDS[looks_like]}); set data.source={looks_like}")


# ---------------------------------------------------------------------------------- error classes


def test_dataset_error_is_one_line_value_error_and_picklable() -> None:
    err = DatasetError("data/x.jsonl", "cannot load the dataset (boom\non two lines); check data.path")
    assert isinstance(err, ValueError)
    assert str(err) == "data/x.jsonl: cannot load the dataset (boom on two lines); check data.path"
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), str(again), again.source) == (DatasetError, str(err), "data/x.jsonl")


def test_bad_parquet_and_unreadable_sources(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DatasetError) as err:
        load_tldr(str(bad))
    assert str(err.value).startswith(f"{bad}: cannot load the dataset (") and "\n" not in str(err.value)
    with pytest.raises(DatasetError, match="no dataset given; set data.path"):
        load_tldr("")
    if os.geteuid() != 0:  # root reads any file
        locked = tmp_path / "locked.jsonl"
        locked.write_bytes(TLDR.read_bytes())
        locked.chmod(0)
        with pytest.raises(DatasetError, match=r"locked\.jsonl: cannot read the file \(Permission denied\)"):
            load_tldr(str(locked))


def test_hub_id_offline_without_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id not in the (empty) cache fails as 'not available offline' and never opens a connection."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    connects: list[object] = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: connects.append(address))
    hub_id = "r2m-tests-nobody/made-up-dataset"
    for load, split in ((load_tldr, "train"), (load_ultrafeedback_binarized, "train_prefs"), (detect_kind, None)):
        with pytest.raises(DatasetError) as err:
            load(hub_id)
        assert str(err.value) == (
            f"{hub_id}[{split or 'train'}]: not available offline (no local copy in the Hugging Face cache); "
            "pass a local file or directory as data.path"
        )
    assert connects == []
