"""Content keys of the flow's stage tasks: what a stage declares moves its key, nothing else does."""

from __future__ import annotations

from pathlib import Path

from r2m.config import load_config
from tasks import caching, stages

REPO = Path(__file__).resolve().parents[2]


def _cfg(*overrides: str):
    return load_config(REPO / "params.yaml", profile="ci", overrides=list(overrides))


def test_path_digest_of_a_file_a_directory_and_nothing(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("x")
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "w.bin").write_bytes(b"\0\1")
    first = caching.path_digest(d)
    assert caching.path_digest(tmp_path / "none") == caching.MISSING
    assert caching.path_digest(f) != caching.path_digest(tmp_path / "none")
    (d / "sub" / "w.bin").write_bytes(b"\0\2")
    assert caching.path_digest(d) != first
    (d / "sub" / "w.bin").write_bytes(b"\0\1")
    assert caching.path_digest(d) == first
    (d / "sub" / "w.bin").rename(d / "sub" / "v.bin")  # same bytes under another name
    assert caching.path_digest(d) != first


def test_a_declared_key_moves_the_key_an_undeclared_one_does_not(tmp_path):
    sft, ev = stages.get("sft"), stages.get("evaluate")
    base = caching.input_key(_cfg(), sft, None, tmp_path, mlflow=True)
    assert caching.input_key(_cfg(), sft, None, tmp_path, mlflow=True) == base  # deterministic
    assert caching.input_key(_cfg("sft.lr=0.5"), sft, None, tmp_path, mlflow=True) != base
    assert caching.input_key(_cfg("evaluate.max_new_tokens=7"), sft, None, tmp_path, mlflow=True) != base
    # judging and the evaluation's pair count are not SFT's business
    assert caching.input_key(_cfg("judge.max_items=3"), sft, None, tmp_path, mlflow=True) == base
    assert caching.input_key(_cfg("evaluate.n_policy_pairs=3"), sft, None, tmp_path, mlflow=True) == base
    assert caching.input_key(_cfg(), sft, None, tmp_path, mlflow=False) != base
    assert caching.input_key(_cfg("seed=3"), sft, None, tmp_path, mlflow=True) != base  # a common param
    e = caching.input_key(_cfg(), ev, "grpo-r2m", tmp_path, mlflow=True)
    assert caching.input_key(_cfg("judge.max_items=3"), ev, "grpo-r2m", tmp_path, mlflow=True) != e
    assert caching.input_key(_cfg(), ev, "grpo-vanilla", tmp_path, mlflow=True) != e


def test_input_bytes_move_the_key_and_outputs_have_their_own_digest(tmp_path):
    sft = stages.get("sft")
    (tmp_path / "data").mkdir()
    for name in ("sft.jsonl", "eval_prompts.jsonl"):
        (tmp_path / "data" / name).write_text('{"a": 1}\n')
    base = caching.input_key(_cfg(), sft, None, tmp_path, mlflow=True)
    (tmp_path / "data" / "sft.jsonl").write_text('{"a": 2}\n')
    assert caching.input_key(_cfg(), sft, None, tmp_path, mlflow=True) != base
    out = caching.outputs_digest(sft, None, tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "sft.json").write_text("{}")
    assert caching.outputs_digest(sft, None, tmp_path) != out
    assert caching.stage_outputs(stages.get("evaluate"), "grpo-r2m") == [
        "metrics/eval/grpo-r2m_generations.jsonl",
        "metrics/eval/grpo-r2m.json",
    ]
    assert "registry.json" in caching.stage_outputs(stages.get("register"), None)


def test_the_tracking_uri_comes_from_the_environment_when_set(tmp_path, monkeypatch):
    from tasks.common import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(_cfg(), tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    key = caching.input_key(_cfg(), stages.get("sft"), None, tmp_path, mlflow=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(_cfg(), tmp_path) == "http://127.0.0.1:5000"
    assert caching.input_key(_cfg(), stages.get("sft"), None, tmp_path, mlflow=True) != key  # logged elsewhere
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # empty is unset
    assert tracking_uri(_cfg(), tmp_path).startswith("sqlite:///")
