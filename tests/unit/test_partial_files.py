"""What a kill leaves behind never blocks a rerun: a metrics line cut short is dropped (with a warning), a partial
checkpoint is skipped in favour of the last complete one; damage anywhere else is an error naming it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from r2m.data.io import DataValidationError
from r2m.rl.callbacks import read_rows
from r2m.rl.runner import incomplete, latest_checkpoint


def test_a_metrics_line_cut_short_is_dropped_and_a_bad_middle_line_is_an_error(tmp_path, caplog):
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    with caplog.at_level("WARNING"):
        assert read_rows(f) == [{"step": 1}, {"step": 2}]
    assert "line 3 was cut short" in caplog.text
    f.write_text('{"step": 1}\n{"step": 2\n{"step": 3}\n')
    with pytest.raises(DataValidationError, match=r"metrics.jsonl: row 2: field '<row>': not valid JSON"):
        read_rows(f)


def _checkpoint(d, step: int, files=("trainer_state.json", "model.safetensors")):
    c = d / f"checkpoint-{step}"
    c.mkdir(parents=True)
    if "model.safetensors" in files:
        save_file({"w": torch.ones(64)}, c / "model.safetensors")
    for name in files:
        if name != "model.safetensors":
            (c / name).write_text(json.dumps({"global_step": step}))
    return c


def test_a_partial_checkpoint_is_skipped_for_the_last_complete_one(tmp_path, caplog):
    good = _checkpoint(tmp_path, 2)
    assert incomplete(good) is None and latest_checkpoint(tmp_path) == good
    only_model = _checkpoint(tmp_path, 4, files=("model.safetensors",))
    assert incomplete(only_model) == "trainer_state.json is missing"
    cut = _checkpoint(tmp_path, 6)
    raw = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(raw[:-10])
    assert incomplete(cut).startswith("model.safetensors is cut short")
    (tmp_path / "checkpoint-8").mkdir()
    (tmp_path / "checkpoint-8" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-8" / "model.safetensors").write_bytes(b"garbage")
    assert incomplete(tmp_path / "checkpoint-8") == "model.safetensors is not a safetensors file"
    half_state = _checkpoint(tmp_path, 10)
    (half_state / "trainer_state.json").write_text('{"global_step": 1')  # a kill while the state was written
    assert incomplete(half_state) == "trainer_state.json is cut short"
    with caplog.at_level("WARNING"):
        assert latest_checkpoint(tmp_path) == good
    assert caplog.text.count("is incomplete") == 4
    # a method's own state (R2M's head) is part of a complete checkpoint
    assert latest_checkpoint(tmp_path, required=("r2m_head.safetensors",)) is None
    save_file({"w": torch.zeros(2)}, good / "r2m_head.safetensors")
    assert latest_checkpoint(tmp_path, required=("r2m_head.safetensors",)) == good
