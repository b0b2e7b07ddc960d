"""MLflow "models from code" definition used by :func:`r2m.tracking.register_model_dir`.

MLflow copies this file into every registered model version and executes it on load, so nothing is ever
pickled: the actual weights travel as a plain artifact directory (``artifacts={"model": <dir>}``), i.e. the
safetensors directory written by ``save_pretrained`` (policy / reward model) or the reward-head directory
(``*.safetensors`` + ``config.json``).

The file is deliberately self-contained (no ``r2m`` imports) and cheap to import (``torch`` and
``transformers`` are imported lazily on the first ``predict``), so ``mlflow.pyfunc.load_model`` works in any
environment that has MLflow, and serving environments only need torch/transformers when they predict.

``predict`` semantics (list of strings in, list out):

* causal LM directory (``*ForCausalLM``): greedy continuation of each prompt (``params``:
  ``max_new_tokens``, default 32) -> ``list[str]``;
* sequence classification directory (``*ForSequenceClassification``, a full reward model): the first logit of
  each text -> ``list[float]``;
* anything else (e.g. a bare reward head): not servable on its own; use
  ``r2m.tracking.load_registered`` and load it with the backbone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class R2MModelDir(PythonModel):
    """A pyfunc wrapper around a saved model directory (see module docstring)."""

    def load_context(self, context: Any) -> None:
        """Remember where MLflow put the model directory; load nothing yet."""
        self.model_dir = Path(context.artifacts["model"])
        self._model: Any = None
        self._tokenizer: Any = None
        self._task: str | None = None

    def _detect_task(self) -> str:
        """Return "causal_lm", "seq_cls" or "unsupported" from ``config.json``'s architectures."""
        config_path = self.model_dir / "config.json"
        archs: list[str] = []
        if config_path.is_file():
            archs = list(json.loads(config_path.read_text()).get("architectures") or [])
        if any(a.endswith("ForCausalLM") for a in archs):
            return "causal_lm"
        if any(a.endswith("ForSequenceClassification") for a in archs):
            return "seq_cls"
        return "unsupported"

    def _load(self) -> None:
        """Load tokenizer and model on first use."""
        if self._model is not None:
            return
        self._task = self._detect_task()
        if self._task == "unsupported":
            raise TypeError(
                f"{self.model_dir} is not a standalone HF model (e.g. a reward head); "
                "use r2m.tracking.load_registered() and load it together with its backbone"
            )
        import transformers  # noqa: PLC0415 (lazy: keep pyfunc loading cheap)

        self._tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_dir)
        if self._task == "causal_lm":
            self._model = transformers.AutoModelForCausalLM.from_pretrained(self.model_dir)
        else:
            self._model = transformers.AutoModelForSequenceClassification.from_pretrained(self.model_dir)
        self._model.eval()

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list:
        """Generate continuations (policy) or scores (reward model) for ``model_input`` texts."""
        import torch  # noqa: PLC0415

        self._load()
        params = params or {}
        out: list[Any] = []
        with torch.no_grad():
            for text in model_input:
                enc = self._tokenizer(str(text), return_tensors="pt")
                if self._task == "causal_lm":
                    gen = self._model.generate(
                        **enc,
                        max_new_tokens=int(params.get("max_new_tokens", 32)),
                        do_sample=False,
                        pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
                    )
                    out.append(self._tokenizer.decode(gen[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
                else:
                    out.append(float(self._model(**enc).logits[0, 0]))
        return out


mlflow.models.set_model(R2MModelDir())
