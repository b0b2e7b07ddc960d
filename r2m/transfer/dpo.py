"""One DPO (or IPO) iteration with TRL's ``DPOTrainer``: the policy of the previous iteration is both the start and
the reference (as the authors' iterative DPO), trained on the iteration's (best, worst) pairs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from r2m.config import TransferConfig

log = logging.getLogger(__name__)


def dpo_config(tcfg: TransferConfig, output_dir: Path, seed: int, max_length: int):
    from trl import DPOConfig

    from r2m.rl.runner import policy_device

    return DPOConfig(
        output_dir=str(output_dir),
        beta=tcfg.beta,
        loss_type=[tcfg.loss],
        learning_rate=tcfg.lr,
        lr_scheduler_type="constant",
        num_train_epochs=tcfg.epochs,
        per_device_train_batch_size=tcfg.batch_size,
        gradient_accumulation_steps=1,
        max_length=max_length,
        seed=seed,
        data_seed=seed,
        use_cpu=policy_device().type == "cpu",  # as the RL stage: the GPU wherever there is one
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def train_dpo(
    start: Path, pairs: Sequence[dict], out: Path, tcfg: TransferConfig, seed: int, max_length: int = 512
) -> list[dict]:
    """Train the policy in ``start`` on ``pairs`` (``prompt``, ``chosen``, ``rejected``) against itself as the
    reference; save it to ``out`` (safetensors + tokenizer); returns TRL's per-step log rows (loss, rewards/...)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    tok = AutoTokenizer.from_pretrained(start)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(start, use_safetensors=True, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(start, use_safetensors=True, dtype=torch.float32).eval()
    data = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
    trainer = DPOTrainer(
        model=model,
        ref_model=ref,
        args=dpo_config(tcfg, out.parent / f".{out.name}.trainer", seed, max_length),
        train_dataset=data,
        processing_class=tok,
    )
    trainer.train()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    rows = [
        {k: v for k, v in entry.items() if not k.endswith(("_runtime", "_per_second")) and k != "total_flos"}
        for entry in trainer.state.log_history
        if "loss" in entry
    ]
    return rows
