"""How the policy sees a task prompt: as is (``plain``) or as a chat turn with an instruction (``chat``).

Instruct models (SmolLM2-Instruct, Llama-3-Instruct) need their chat template; base models and the tiny policy read
the plain ``SUBREDDIT: ... POST: ... TL;DR:`` prompt. The reward model and the gold judge always score the plain
prompt + response, so a prompt format change never changes what the reward model was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

from r2m.config import PolicyConfig

PROMPT_FORMATS = ("plain", "chat")


def render_prompt(tok, prompt: str, cfg: PolicyConfig) -> str:
    """The policy-side text for a plain task prompt."""
    if cfg.prompt_format == "plain":
        return prompt
    if cfg.prompt_format == "chat":
        if not getattr(tok, "chat_template", None):
            raise ValueError("policy.prompt_format=chat but the tokenizer has no chat template")
        messages = [{"role": "user", "content": f"{cfg.instruction}\n\n{prompt}"}]
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"policy.prompt_format={cfg.prompt_format!r}; valid: {', '.join(PROMPT_FORMATS)}")


def render_prompts(tok, prompts: Sequence[str], cfg: PolicyConfig) -> list[str]:
    return [render_prompt(tok, p, cfg) for p in prompts]
