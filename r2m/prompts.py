"""How the policy sees a task prompt: as is (``plain``) or as a chat turn with an instruction (``chat``).

Instruct models (SmolLM2-Instruct, Llama-3-Instruct) need their chat template; base models and the tiny policy read
the plain ``SUBREDDIT: ... POST: ... TL;DR:`` prompt. The reward model and the gold judge always score the plain
prompt + response, so a prompt format change never changes what the reward model was trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from r2m.config import PolicyConfig

PROMPT_FORMATS = ("plain", "chat")
logger = logging.getLogger(__name__)


def fit_prompt(tok, prompt: str, max_tokens: int) -> tuple[str, bool]:
    """``prompt`` cut to its last ``max_tokens`` tokens (``0``: no limit); ``(text, was_truncated)``. The end is
    kept: a task prompt ends with what the policy must do (``TL;DR:``, the question)."""
    if max_tokens <= 0:
        return prompt, False
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return prompt, False
    return tok.decode(ids[-max_tokens:]), True


def render_prompt(tok, prompt: str, cfg: PolicyConfig) -> str:
    """The policy-side text for a plain task prompt (cut to ``cfg.max_prompt_tokens`` first)."""
    return render_prompts_counted(tok, [prompt], cfg)[0][0]


def render_prompts_counted(tok, prompts: Sequence[str], cfg: PolicyConfig) -> tuple[list[str], int]:
    """The policy-side texts and how many prompts lost their start to ``cfg.max_prompt_tokens``."""
    if cfg.prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"policy.prompt_format={cfg.prompt_format!r}; valid: {', '.join(PROMPT_FORMATS)}")
    if cfg.prompt_format == "chat" and not getattr(tok, "chat_template", None):
        raise ValueError("policy.prompt_format=chat but the tokenizer has no chat template")
    out, cut = [], 0
    for prompt in prompts:
        prompt, truncated = fit_prompt(tok, prompt, cfg.max_prompt_tokens)
        cut += truncated
        if cfg.prompt_format == "chat":
            messages = [{"role": "user", "content": f"{cfg.instruction}\n\n{prompt}"}]
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        out.append(prompt)
    return out, cut


def render_prompts(tok, prompts: Sequence[str], cfg: PolicyConfig) -> list[str]:
    return render_prompts_counted(tok, prompts, cfg)[0]


def log_truncated(n: int, total: int, where: str) -> None:
    """One warning when prompts were cut (``policy.max_prompt_tokens``)."""
    if n:
        logger.warning("%s: %d of %d prompts longer than policy.max_prompt_tokens lost their start", where, n, total)
