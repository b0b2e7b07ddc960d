"""Contract with TRL: the pinned version and the internals the RL adapter relies on. If TRL is upgraded and any of
these change, this fails loudly here instead of R2M silently scoring the wrong thing."""

from __future__ import annotations

import inspect

import pytest
import trl
from transformers import PrinterCallback, TrainerCallback
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

PINNED = "1.16.0"


def test_trl_is_the_pinned_version():
    assert trl.__version__ == PINNED, f"TRL {trl.__version__} != pinned {PINNED}: re-check r2m/rl before bumping"


@pytest.mark.parametrize("trainer", [GRPOTrainer, RLOOTrainer])
def test_reward_function_call_contract(trainer):
    """Custom reward callables get completion ids, the dataset columns, the trainer state and log_metric."""
    src = inspect.getsource(trainer._calculate_rewards)
    assert "completion_ids=completion_ids_list" in src
    assert 'reward_kwargs["trainer_state"] = self.state' in src
    assert 'reward_kwargs["log_metric"] = self._log_metric' in src
    assert 'key not in ["prompt", "completion", "completion_ids"]' in src  # dataset columns (post_id, rm_prompt)


@pytest.mark.parametrize("trainer", [GRPOTrainer, RLOOTrainer])
def test_logged_metrics_reach_the_log_dict(trainer):
    """log_metric values are averaged into the per-step logs that MetricsRecorder.on_log reads."""
    assert "_pending_metrics[name].append(value)" in inspect.getsource(trainer._log_metric)
    assert "logs.update(metrics)" in inspect.getsource(trainer.log)


@pytest.mark.parametrize("config", [GRPOConfig, RLOOConfig])
def test_config_fields_used(config):
    fields = set(inspect.signature(config).parameters)
    needed = {
        "num_generations",
        "max_completion_length",
        "temperature",
        "beta",
        "per_device_train_batch_size",
        "max_steps",
        "save_steps",
        "save_total_limit",
        "use_cpu",
        "lr_scheduler_type",
        "disable_tqdm",
    }
    assert needed <= fields, needed - fields


def test_callbacks_we_hook():
    for hook in ("on_step_end", "on_save", "on_log", "on_train_begin"):
        assert hasattr(TrainerCallback, hook)
    assert PrinterCallback is not None  # removed from the trainer in favour of r2m.rl.callbacks.ProgressBar
