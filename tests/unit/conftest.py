"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def lm():
    """(tokenizer, policy, reference): two small GPT-NeoX causal LMs of one config, in eval mode."""
    from transformers import GPTNeoXForCausalLM

    from r2m.models.tokenizer import train_bpe_tokenizer
    from tests.unit.test_r2m_rl import TEXTS, neox_config

    torch.manual_seed(0)
    tok = train_bpe_tokenizer(TEXTS, vocab_size=300)
    cfg = neox_config(tok, 24, num_hidden_layers=2)
    return tok, GPTNeoXForCausalLM(cfg).eval(), GPTNeoXForCausalLM(cfg).eval()
