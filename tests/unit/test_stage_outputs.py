"""A stage's outputs as a transaction (tasks/outputs.py): a failed or killed stage leaves the last finished run's
outputs exactly as they were."""

from __future__ import annotations

import hashlib
import logging
import os

import pytest

from tasks import outputs, stages
from tasks.outputs import BACKUP_DIR, declared_outputs, restore, transaction

SFT = stages.get("sft")  # outs models/sft (a directory), metrics/sft.json
RL = stages.get("rl")


def tree(wd) -> dict[str, str]:
    return {
        p.relative_to(wd).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(wd.rglob("*"))
        if p.is_file()
    }


def finished_run(wd):
    (wd / "models" / "sft").mkdir(parents=True)
    (wd / "models" / "sft" / "model.safetensors").write_bytes(b"old weights")
    (wd / "metrics").mkdir()
    (wd / "metrics" / "sft.json").write_text('{"loss": 1}')
    (wd / "data").mkdir()
    (wd / "data" / "sft.jsonl").write_text("input, not an output\n")
    return tree(wd)


def write_new(wd):
    (wd / "models" / "sft").mkdir(parents=True, exist_ok=True)
    (wd / "models" / "sft" / "model.safetensors").write_bytes(b"half-written new weig")
    (wd / "models" / "sft" / "extra.bin").write_bytes(b"x")


def test_declared_outputs_skip_what_a_stage_resumes_from():
    assert declared_outputs(SFT, None) == ["models/sft", "metrics/sft.json"]
    rl = declared_outputs(RL, "grpo-r2m")
    assert "models/rl/grpo-r2m" not in rl  # persist: the run directory resumes a crashed run
    assert rl == ["metrics/rl/grpo-r2m.json", "metrics/rl/grpo-r2m.csv"]


def test_a_failed_stage_leaves_the_previous_outputs_exactly(tmp_path):
    before = finished_run(tmp_path)
    with pytest.raises(RuntimeError, match="late failure"), transaction(SFT, None, tmp_path, "sft"):
        assert not (tmp_path / "models" / "sft").exists()  # the stage writes from scratch, as under dvc repro
        write_new(tmp_path)
        raise RuntimeError("late failure")
    assert tree(tmp_path) == before and not (tmp_path / BACKUP_DIR).exists()


def test_a_finished_stage_keeps_its_new_outputs_and_no_backup(tmp_path):
    finished_run(tmp_path)
    with transaction(SFT, None, tmp_path, "sft"):
        write_new(tmp_path)
    assert (tmp_path / "models" / "sft" / "extra.bin").exists()
    assert not (tmp_path / "metrics" / "sft.json").exists()  # not rewritten by this (fake) stage: gone, as in dvc
    assert not (tmp_path / BACKUP_DIR).exists()


def test_outputs_that_did_not_exist_are_removed_on_failure(tmp_path):
    with pytest.raises(RuntimeError), transaction(SFT, None, tmp_path, "sft"):
        write_new(tmp_path)
        raise RuntimeError("first run fails")
    assert not (tmp_path / "models" / "sft").exists()


def test_a_killed_stage_is_repaired_by_the_next_run(tmp_path, caplog):
    before = finished_run(tmp_path)
    killed = transaction(SFT, None, tmp_path, "sft")
    killed.__enter__()  # never exits: the process was killed here
    write_new(tmp_path)
    with caplog.at_level(logging.WARNING, logger="r2m"):
        with pytest.raises(RuntimeError), transaction(SFT, None, tmp_path, "sft"):
            assert "did not finish; putting its previous outputs back" in caplog.text
            write_new(tmp_path)
            raise RuntimeError("and the rerun fails too")
    assert tree(tmp_path) == before


def test_a_kill_while_restoring_is_repaired_too(tmp_path, monkeypatch):
    before = finished_run(tmp_path)
    cm = transaction(SFT, None, tmp_path, "sft")
    cm.__enter__()
    write_new(tmp_path)
    real, calls = os.replace, []

    def dies_on_the_second_move(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed mid-restore")
        real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", dies_on_the_second_move)
    with pytest.raises(KeyboardInterrupt):
        restore(tmp_path, tmp_path / BACKUP_DIR / "sft")
    monkeypatch.setattr(outputs.os, "replace", real)
    assert len(calls) == 2 and tree(tmp_path) != before
    restore(tmp_path, tmp_path / BACKUP_DIR / "sft")
    assert tree(tmp_path) == before
