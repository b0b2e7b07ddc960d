"""MLflow "models from code" definition used by :func:`r2m.tracking.register_model_dir`.

MLflow copies this file into every registered model version and executes it on load, so nothing is ever pickled:
the weights travel as plain artifact directories (safetensors), and the ``r2m`` code that reads them travels as the
version's ``code_paths``. Loading is cheap (torch / transformers / r2m are imported on the first ``predict``).

Every version does its job through ``mlflow.pyfunc.load_model("models:/NAME@ALIAS").predict(...)``; the kind comes
from the version's ``serving.json`` artifact (how the pipeline prompted and scored):

* ``policy``: rows with a ``prompt`` column (or a list of prompt strings) -> one completion per prompt. Prompts are
  rendered the way the pipeline rendered them for the policy (``serving.json``'s ``policy``; ``raw_prompt=True``
  skips that). ``params``: ``max_new_tokens`` (32), ``temperature`` (0 = greedy), ``seed``.
* ``reward_model``: rows with ``prompt`` and ``response`` -> the Bradley-Terry score of ``prompt + response``.
* ``reward_head``: the same rows -> the R2M reward at t = T: the head reads the trunk's reward token embedding and
  the hidden states of the policy it was trained with (artifacts ``trunk`` and ``policy``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


def _rows(model_input, columns: tuple[str, ...]) -> dict[str, list[str]]:
    """Columns of a pandas DataFrame or a list of dicts, as lists of strings; a lone prompt column (a list of
    strings) may have any name."""
    if isinstance(model_input, list):
        if columns == ("prompt",) and all(isinstance(x, str) for x in model_input):
            return {"prompt": list(model_input)}
        return {c: [str(row[c]) for row in model_input] for c in columns}
    if columns == ("prompt",) and len(model_input.columns) == 1:
        return {"prompt": [str(x) for x in model_input.iloc[:, 0]]}
    missing = [c for c in columns if c not in model_input.columns]
    if missing:
        raise ValueError(f"input needs column(s) {missing}, got {list(model_input.columns)}")
    return {c: [str(x) for x in model_input[c]] for c in columns}


class R2MModelDir(PythonModel):
    """A pyfunc wrapper around a saved policy, reward model or R2M head (see module docstring)."""

    def load_context(self, context: Any) -> None:
        """Remember where MLflow put the artifacts and what kind of model they are; load nothing yet."""
        self.artifacts = {k: Path(v) for k, v in context.artifacts.items()}
        self.model_dir = self.artifacts["model"]
        serving = self.artifacts.get("serving")
        self.config: dict[str, Any] = json.loads(serving.read_text()) if serving else {}
        self.kind: str = self.config.get("kind", "policy")
        self._loaded: Any = None

    def _load(self) -> Any:
        """Load the models on first use; returns what :meth:`predict` needs for this kind."""
        if self._loaded is not None:
            return self._loaded
        import torch  # noqa: PLC0415 (lazy: keep pyfunc loading cheap)

        from r2m.models.builders import load_causal_lm
        from r2m.models.reward_model import RewardModel

        torch.set_grad_enabled(False)
        if self.kind == "policy":
            model, tok = load_causal_lm(self.model_dir)
            self._loaded = (model.eval(), tok)
        elif self.kind == "reward_model":
            self._loaded = RewardModel.load(self.model_dir).eval()
        elif self.kind == "reward_head":
            from r2m.models.r2m_head import R2MRewardHead
            from r2m.rl.policy_pass import PolicyMonitor
            from r2m.rl.r2m import feedback_scorer

            rm = RewardModel.load(self.artifacts["trunk"]).eval()
            head = R2MRewardHead.load(self.model_dir)
            policy, tok = load_causal_lm(self.artifacts["policy"])
            monitor = PolicyMonitor(tok, policy.eval(), keep_feedback=True)
            monitor.attach(policy, capture=False)
            self._loaded = feedback_scorer(
                rm,
                head,
                monitor,
                lambda ps: self._render(tok, ps),
                max_length=int(self.config.get("max_length", 512)),
                seed=int(self.config.get("seed", 0)),
            )
        else:
            raise TypeError(f"{self.model_dir}: unknown model kind {self.kind!r}")
        return self._loaded

    def _render(self, tok, prompts: list[str]) -> list[str]:
        """Prompts as the pipeline showed them to the policy (``serving.json``'s ``policy``)."""
        from r2m.config import PolicyConfig
        from r2m.prompts import render_prompts

        return render_prompts(tok, prompts, PolicyConfig(**self.config.get("policy", {})))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list:
        """Completions (policy) or scores (reward model / head) for ``model_input`` (see module docstring): MLflow
        enforces the kind's signature and hands over a DataFrame (a list of strings or dicts when called directly)."""
        params = params or {}
        loaded = self._load()
        if self.kind != "policy":
            rows = _rows(model_input, ("prompt", "response"))
            if self.kind == "reward_model":
                texts = [p + r for p, r in zip(rows["prompt"], rows["response"], strict=True)]
                return loaded.score_texts(texts, max_length=int(self.config.get("max_length", 512))).tolist()
            return [float(x) for x in loaded(rows["prompt"], rows["response"])]
        from r2m.generation import generate

        model, tok = loaded
        prompts = _rows(model_input, ("prompt",))["prompt"]
        if not params.get("raw_prompt", False):
            prompts = self._render(tok, prompts)
        temperature = float(params.get("temperature", 0.0))
        return generate(
            model,
            tok,
            prompts,
            int(params.get("max_new_tokens", 32)),
            greedy=temperature <= 0,
            temperature=max(temperature, 1e-5),
            seed=int(params.get("seed", 0)),
        )


mlflow.models.set_model(R2MModelDir())
