"""Registered models do their job through ``mlflow.pyfunc.load_model("models:/NAME@champion")`` in a fresh process,
with the r2m code bundled in the version: the policy generates (and honours ``params``), the reward model and the
R2M head score (prompt, response) rows exactly as the pipeline scores them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPTNeoXForCausalLM, GPTNeoXModel

from r2m import tracking
from r2m.generation import generate
from r2m.models.r2m_head import R2MHeadConfig, R2MRewardHead
from r2m.models.reward_model import RewardModel
from r2m.models.tokenizer import train_bpe_tokenizer
from r2m.rl.policy_pass import PolicyMonitor
from r2m.rl.r2m import feedback_scorer
from tests.helpers.tiny_models import neox_config

TEXTS = ["my roommate Jake owes me $300 for rent", "my cat Milo needs a $2,500 vet visit", "TL;DR: help"] * 8
PROMPTS = ["my roommate Jake owes me", "my cat Milo needs"]
RESPONSES = [" $300 for rent", " a vet visit"]
CONFIG = {"policy": {"prompt_format": "plain"}, "max_length": 64, "seed": 3}

LOAD = """
import json, sys, mlflow, pandas as pd
out = {}
policy = mlflow.pyfunc.load_model("models:/t-policy@champion")
out["short"] = policy.predict(pd.DataFrame({"prompt": PROMPTS}), params={"max_new_tokens": 2})
out["long"] = policy.predict(PROMPTS, params={"max_new_tokens": 6})
rows = pd.DataFrame({"prompt": PROMPTS, "response": RESPONSES})
out["rm"] = mlflow.pyfunc.load_model("models:/t-reward-model@champion").predict(rows)
head = mlflow.pyfunc.load_model("models:/t-reward-head@champion")
out["head"] = head.predict([{"prompt": p, "response": r} for p, r in zip(PROMPTS, RESPONSES)])
import r2m
out["r2m_file"] = r2m.__file__
try:
    head.predict(pd.DataFrame({"prompt": PROMPTS}))
except Exception as e:
    out["bad_input"] = type(e).__name__ + ": " + str(e)[:200]
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny policy (with tokenizer), reward model and R2M head (non-trivial cross-attention), saved as the
    pipeline saves them."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    tok = train_bpe_tokenizer(TEXTS, vocab_size=300)
    policy = GPTNeoXForCausalLM(neox_config(tok, 24))
    policy.save_pretrained(root / "policy", safe_serialization=True)
    tok.save_pretrained(root / "policy")
    rm = RewardModel(GPTNeoXModel(neox_config(tok, 16)), tok)
    rm.save(root / "rm")
    cfg = R2MHeadConfig(rm_dim=16, policy_dim=24, attn_dim=8, out_init_gain=1.0, total_steps=4, omega_floor=0.5)
    R2MRewardHead(cfg, head=rm.head).save(root / "head")
    return {"policy": root / "policy", "rm": root / "rm", "head": root / "head"}


def test_registered_models_serve_in_a_fresh_process(saved: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    previous = dict(tracking._state)
    tracking.configure(uri, "r2m-serve", artifact_location=str(tmp_path / "mlartifacts"))
    try:
        with tracking.stage_run("register", "pipe-serve") as run:
            rid = run.info.run_id
            for name, kind, path, extra in (
                ("t-policy", "policy", saved["policy"], None),
                ("t-reward-model", "reward_model", saved["rm"], None),
                ("t-reward-head", "reward_head", saved["head"], {"trunk": saved["rm"], "policy": saved["policy"]}),
            ):
                v = tracking.register_model_dir(
                    path, name, run_id=rid, kind=kind, extra_artifacts=extra, serving=CONFIG
                )
                tracking.set_alias(name, v, "champion")
    finally:
        tracking._state.clear()
        tracking._state.update(previous)

    code = f"PROMPTS = {PROMPTS!r}\nRESPONSES = {RESPONSES!r}\n" + LOAD
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])

    # what the pipeline computes in-process with the same files
    from r2m.models.builders import load_causal_lm

    model, tok = load_causal_lm(saved["policy"])
    assert out["short"] == generate(model, tok, PROMPTS, 2, greedy=True)
    assert out["long"] == generate(model, tok, PROMPTS, 6, greedy=True)
    assert out["short"] != out["long"]  # params reach generate
    rm = RewardModel.load(saved["rm"])
    texts = [p + r for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    assert out["rm"] == pytest.approx(rm.score_texts(texts, max_length=64).tolist(), abs=1e-5)
    monitor = PolicyMonitor(tok, model, keep_feedback=True)
    monitor.attach(model, capture=False)
    score = feedback_scorer(rm, R2MRewardHead.load(saved["head"]), monitor, lambda ps: ps, max_length=64, seed=3)
    expected = score(PROMPTS, RESPONSES)
    assert out["head"] == pytest.approx(expected, abs=1e-5)
    assert out["head"] != pytest.approx(out["rm"], abs=1e-3)  # the head's cross-attention reads the policy
    # the version's bundled r2m code was imported, not the project's
    assert "/code/r2m/" in out["r2m_file"] and not out["r2m_file"].startswith(str(Path(tracking.__file__).parent))
    assert "response" in out["bad_input"]
