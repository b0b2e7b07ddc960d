"""``prepare`` on every real-data format from a local file: the same files, the split sizes of the config, the
dataset's own labels; a file in none of the formats is one clear error and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2m.config import load_config
from r2m.data.io import PAIR_SCHEMA, PROMPT_SCHEMA, SFT_SCHEMA, DatasetError, DataValidationError, read_jsonl
from r2m.paths import Paths
from tasks.preferences import dataset_pairs
from tasks.prepare import prepare
from tests.conftest import REPO

N = 9  # rows per file: 3 + 3 prompt splits and 3 pair splits of one prompt each
SIZES = [f"data.n_{k}=1" for k in ("sft", "rl_prompts", "eval_prompts", "rm_train", "rm_heldout", "rm_test")]


def _chat(q: str, a: str) -> list[dict]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def _rows(kind: str) -> list[dict]:
    """N rows of ``kind``, prompt i asking question i (distinct prompts)."""
    out = []
    for i in range(N):
        q, good, bad = f"What is {i} + {i}?", f"{i} + {i} = {2 * i}.", f"It is {2 * i + 1}."
        if kind == "preference":
            out.append({"prompt": q, "chosen": good, "rejected": bad})
        elif kind == "ultrafeedback":
            out.append({"prompt": q, "chosen": _chat(q, good), "rejected": _chat(q, bad), "score_chosen": 8.0})
        elif kind == "hh_rlhf":
            out.append(
                {"chosen": f"\n\nHuman: {q}\n\nAssistant: {good}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {bad}"}
            )
        elif kind == "summarize_from_feedback":
            info = {"id": f"t3_{i}", "post": f"My question {i} about sums.", "title": q, "subreddit": "math"}
            texts = [{"text": good}, {"text": bad}] if i % 2 == 0 else [{"text": bad}, {"text": good}]
            out.append({"info": info, "summaries": texts, "choice": i % 2})  # the labellers chose `good` every time
    return out


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("kind", ["preference", "ultrafeedback", "hh_rlhf", "summarize_from_feedback"])
def test_prepare_reads_every_pair_format(tmp_path, kind):
    src = _write(tmp_path / f"{kind}.jsonl", _rows(kind))
    cfg = load_config(
        REPO / "params.yaml", overrides=[f"data.source={kind}", f"data.path={src.name}", "judge.kind=local", *SIZES]
    )
    m = prepare(cfg, tmp_path)["metrics"]
    assert m["source"]["kind"] == kind and m["source_prompts"] == N
    data = tmp_path / "data"
    sft = read_jsonl(data / "sft.jsonl", SFT_SCHEMA)
    ev = read_jsonl(data / "eval_prompts.jsonl", PROMPT_SCHEMA)
    assert len(sft) == len(ev) == 1 and "=" in sft[0]["completion"]  # SFT and references: the chosen response
    dataset_pairs(cfg, Paths.of(cfg, tmp_path))  # the preferences stage on a real dataset: its own labels
    pairs = [p for s in ("rm_train", "rm_heldout", "rm_test") for p in read_jsonl(data / f"{s}.jsonl", PAIR_SCHEMA)]
    assert len(pairs) == 3 and all("=" in p["chosen"] and "It is" in p["rejected"] for p in pairs)
    if kind == "summarize_from_feedback":  # the policy's TL;DR prompt layout
        assert all(p["prompt"].startswith("SUBREDDIT: r/math\n\nTITLE: ") for p in pairs)
    prompts = [r["prompt"] for r in (*sft, *ev, *read_jsonl(data / "rl_prompts.jsonl"), *pairs)]
    assert len(set(prompts)) == len(prompts) == 6  # disjoint splits


def test_too_few_prompts_and_unknown_format_write_nothing(tmp_path):
    src = _write(tmp_path / "p.jsonl", _rows("preference")[:5])
    cfg = load_config(
        REPO / "params.yaml", overrides=["data.source=preference", f"data.path={src}", "judge.kind=local", *SIZES]
    )
    with pytest.raises(DatasetError, match=r"5 distinct prompts, but data.n_sft .* need 6"):
        prepare(cfg, tmp_path)
    _write(src, [{"question": "q", "answer": "a"}])
    with pytest.raises(DatasetError, match="not a known dataset format"):
        prepare(cfg, tmp_path)
    assert not (tmp_path / "data").exists()


def test_identical_pairs_are_an_error_or_skipped_and_counted(tmp_path):
    rows = _rows("preference")
    rows.append({**rows[0], "prompt": "An extra prompt?", "rejected": rows[0]["chosen"]})  # no preference in it
    src = _write(tmp_path / "p.jsonl", rows)
    over = ["data.source=preference", f"data.path={src}", "judge.kind=local", *SIZES]
    cfg = load_config(REPO / "params.yaml", overrides=over)
    with pytest.raises(DataValidationError, match=rf"row {len(rows)}: field 'rejected': .*skip_identical_pairs"):
        prepare(cfg, tmp_path)
    assert not (tmp_path / "data").exists()
    cfg = load_config(REPO / "params.yaml", overrides=[*over, "data.skip_identical_pairs=true"])
    m = prepare(cfg, tmp_path)["metrics"]
    assert m["read"] == {"source": {"rows_read": len(rows), "skipped": 0, "skipped_identical": 1}}
    assert m["source_prompts"] == N
