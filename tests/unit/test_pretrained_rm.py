"""``reward_model.pretrained_head``: a trained *ForSequenceClassification reward model is used with its own score
head (the paper profiles' Skywork / cleanrl RMs), scoring exactly as the checkpoint does."""

from __future__ import annotations

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForSequenceClassification

from r2m.config import load_config
from r2m.models.tokenizer import train_bpe_tokenizer
from r2m.paths import Paths
from r2m.rm_train import load_trunk
from tests.conftest import REPO

TEXTS = ["SUBREDDIT: r/a\n\nPOST: my cat sleeps all day.\n\nTL;DR: cat sleeps", "the dog barks at night, every night"]


def _classifier(tmp_path):
    tok = train_bpe_tokenizer(TEXTS * 20, vocab_size=300)
    config = GPTNeoXConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        num_labels=1, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GPTNeoXForSequenceClassification(config)
    model.save_pretrained(tmp_path / "rm", safe_serialization=True)
    tok.save_pretrained(tmp_path / "rm")
    return model.eval(), tok


def test_pretrained_head_scores_as_the_checkpoint(tmp_path):
    model, tok = _classifier(tmp_path)  # GPT-NeoX's score head has no bias: phi gets a zero one
    cfg = load_config(
        REPO / "params.yaml", overrides=[f"reward_model.trunk={tmp_path / 'rm'}", "reward_model.pretrained_head=true"]
    )
    rm = load_trunk(cfg, Paths.of(cfg, tmp_path))
    with torch.no_grad():
        expected = torch.stack([model(**tok(t, return_tensors="pt")).logits[0, 0] for t in TEXTS])
    assert torch.allclose(rm.score_texts(TEXTS), expected, atol=1e-5)
    fresh = load_trunk(load_config(REPO / "params.yaml", overrides=[f"reward_model.trunk={tmp_path / 'rm'}"]), None)
    assert not torch.allclose(fresh.score_texts(TEXTS), expected, atol=1e-3)  # without it: a fresh random head


def test_pretrained_head_needs_a_named_trunk():
    from r2m.config import ConfigError

    with pytest.raises(ConfigError, match="pretrained_head needs reward_model.trunk"):
        load_config(REPO / "params.yaml", overrides=["reward_model.pretrained_head=true"])
