"""Tiny random models for tests: the same GPT-NeoX shapes wherever a test needs a policy or a reward-model trunk."""

from __future__ import annotations

from transformers import GPTNeoXConfig


def neox_config(tok, hidden_size: int, num_hidden_layers: int = 1) -> GPTNeoXConfig:
    """A tiny GPT-NeoX for ``tok`` (2 heads, 64 positions)."""
    return GPTNeoXConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
