"""MLflow helpers: one parent run per pipeline, one nested run per stage, metrics, artefacts, registry.

Layout in MLflow::

    experiment "r2m"
      run <pipeline_id>          tags r2m.pipeline_id=<id>, r2m.role=pipeline   (parent, get-or-create by tag)
        run sft                  tags r2m.stage=sft, mlflow.parentRunId=<parent>, r2m.parent_pipeline_id=<id>
        run reward_model         ...
    registered models "<prefix>-policy", "<prefix>-reward-head": versions with aliases candidate / champion

Design notes

* Everything goes through :class:`mlflow.MlflowClient` with explicit run ids, so the helpers work the same
  in one process (a Prefect flow, whose tasks run in worker threads) and across processes (``dvc repro``,
  one process per stage: the parent is found again by its ``r2m.pipeline_id`` tag). MLflow's active-run
  stack is thread-local; :func:`stage_run` also pushes its run onto the *calling thread's* stack so that
  plain ``mlflow.log_metric(...)`` inside the ``with`` body lands in the stage run, but nothing here relies
  on another thread's stack. A stage's parent is passed explicitly (``parent_run_id``), never inherited.
* ``sqlite:///relative.db`` URIs are resolved to absolute paths once, in :func:`configure`, so a later
  ``chdir`` (tests, workers) cannot point MLflow at a different database.
* Params are flattened (``a.b.c``) and anything that looks like a secret (key containing ``api_key``,
  ``secret``, ``password``, ``credential``, ``private_key``, a key part ending in ``token`` such as
  ``hf_token``/``access_token``, or a value shaped like an API key) is never sent to MLflow.
* Registration uses MLflow "models from code" (:mod:`r2m.registry_model`) with the model directory as a
  plain artifact: nothing is pickled, and :func:`load_registered` gives back the directory for
  ``from_pretrained`` / safetensors loading.
"""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import importlib.metadata
import json
import logging
import math
import numbers
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from r2m.paths import relative_posix

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "r2m"
DEFAULT_ARTIFACT_DIR = "mlartifacts"

TAG_PIPELINE_ID = "r2m.pipeline_id"
TAG_ROLE = "r2m.role"
TAG_STAGE = "r2m.stage"
TAG_PARENT_PIPELINE_ID = "r2m.parent_pipeline_id"
TAG_KIND = "r2m.kind"
TAG_PARENT_RUN_ID = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_RETRY_OF = "r2m.retry_of"  # on a stage run: the unfinished run of the same stage it retries
PIPELINE_ID_ENV = "R2M_PIPELINE_ID"

MODEL_KINDS = ("policy", "reward_model", "reward_head")

# MLflow limits (mlflow.utils.validation); kept here so a rename upstream cannot break the import.
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

_SECRET_KEY_PARTS = ("api_key", "apikey", "secret", "password", "passwd", "credential", "private_key")
_SECRET_VALUE_RE = re.compile(r"^(sk|pk|rk|hf|ghp|gho|ghs|xox[abp])[-_][A-Za-z0-9_\-]{16,}$")
_INVALID_KEY_CHARS = re.compile(r"[^\w\-. /:]")

_REGISTRY_MODEL_CODE = Path(__file__).with_name("registry_model.py")

_state_lock = threading.Lock()
_state: dict[str, str] = {}


# --------------------------------------------------------------------------------------------- configure
def _resolve_tracking_uri(uri: str) -> str:
    """Make ``sqlite:///relative.db`` absolute (against the current directory); other URIs unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        rest = uri[len(prefix) :]
        if rest and not rest.startswith("/") and not rest.startswith(":memory:"):
            path, sep, query = rest.partition("?")
            return f"{prefix}{Path(path).resolve()}{sep}{query}"
    return uri


def _as_artifact_uri(location: str | Path) -> str:
    """Turn a local path (relative or absolute) into a ``file://`` URI; leave real URIs alone."""
    text = str(location)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", text):
        return text
    return Path(text).resolve().as_uri()


def _check_artifact_location(uri: str, name: str, have: str, wanted: str | None) -> None:
    """Refuse a project-local sqlite database whose experiment keeps its artifacts outside the project.

    MLflow stores an experiment's local artifact location as an absolute path (it resolves relative ones when the
    experiment is created), so a copied project's ``mlflow.db`` would log every artifact into the original
    project's ``mlartifacts/``; this names the problem instead.
    """
    if wanted is None or not uri.startswith("sqlite:///") or not have.startswith("file:"):
        return
    from mlflow.utils.file_utils import local_file_uri_to_path

    from r2m.config import ConfigError

    db = Path(uri[len("sqlite:///") :].partition("?")[0])
    have_path, want = Path(local_file_uri_to_path(have)).resolve(), Path(wanted).resolve()
    if have_path != want and want.parent == db.parent and not have_path.is_relative_to(db.parent):
        raise ConfigError(
            f"{db}: experiment {name!r} keeps its artifacts in {have_path}, outside this project ({db.parent}), "
            "so this database was copied from another project; move it aside (a new one is created) or set "
            "mlflow.experiment to a new name"
        )


def configure(
    tracking_uri: str = DEFAULT_TRACKING_URI,
    experiment: str = DEFAULT_EXPERIMENT,
    artifact_location: str | None = None,
) -> str:
    """Point MLflow at ``tracking_uri`` and select (creating if needed) ``experiment``.

    Args:
        tracking_uri: MLflow tracking URI. ``sqlite:///mlflow.db`` (relative to the current directory) is
            resolved to an absolute path, so it keeps working after a ``chdir``.
        experiment: experiment name.
        artifact_location: where a *new* experiment stores artefacts (path or URI). Default for sqlite URIs:
            ``mlartifacts/`` next to the database file; for other URIs the server's default. An existing
            experiment keeps its location.

    Returns:
        The experiment id.
    """
    uri = _resolve_tracking_uri(tracking_uri)
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    # MLflow also exports the URI as MLFLOW_TRACKING_URI; keep the environment the user's, so that a user-set URI is
    # told apart from this process's last choice (one process may track several working directories)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = artifact_location
        if location is None and uri.startswith("sqlite:///") and ":memory:" not in uri:
            location = str(Path(uri[len("sqlite:///") :].partition("?")[0]).parent / DEFAULT_ARTIFACT_DIR)
        try:
            exp_id = client.create_experiment(
                experiment, artifact_location=_as_artifact_uri(location) if location else None
            )
        except MlflowException:  # created concurrently by another process
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
        _check_artifact_location(uri, exp.name, exp.artifact_location, artifact_location)
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp_id)
    mlflow.set_experiment(experiment_id=exp_id)
    with _state_lock:
        _state.update(tracking_uri=uri, experiment=experiment, experiment_id=exp_id)
    return exp_id


def _ensure_configured() -> str:
    """Return the configured experiment id, configuring from the environment on first use.

    ``MLFLOW_TRACKING_URI`` / ``MLFLOW_EXPERIMENT_NAME`` are honoured, otherwise the defaults of
    :func:`configure`. This lets a ``dvc repro`` stage process use the helpers without an explicit call.
    """
    with _state_lock:
        exp_id = _state.get("experiment_id")
    if exp_id is not None:
        return exp_id
    return configure(
        os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI),
        os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT),
    )


def _client() -> MlflowClient:
    _ensure_configured()
    return MlflowClient(_state["tracking_uri"])


# --------------------------------------------------------------------------------------------- flatten
def flatten(d: Mapping, prefix: str = "") -> dict[str, object]:
    """Flatten nested mappings into ``{"a.b.c": value}`` (leaves, including lists, are kept as is).

    >>> flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None})
    {'a.b': 1, 'a.c.d': [1, 2], 'e': None}
    """
    out: dict[str, object] = {}
    for key, value in d.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def is_secret_key(key: str) -> bool:
    """True if a (flattened) key looks like it holds a credential.

    Matches keys containing ``api_key``/``secret``/``password``/``credential``/``private_key`` (any case),
    and keys with a ``.``-separated part that is or ends in ``token`` (``token``, ``hf_token``,
    ``judge.access_token``) -- but not counts such as ``max_new_tokens`` or names such as ``tokenizer``.
    """
    low = key.lower()
    if any(part in low for part in _SECRET_KEY_PARTS):
        return True
    return any(part.endswith("token") for part in low.replace("-", "_").split("."))


def _is_secret_value(value: object) -> bool:
    """True for strings shaped like common API keys (``sk-...``, ``hf_...``, ``ghp_...``)."""
    return isinstance(value, str) and bool(_SECRET_VALUE_RE.match(value.strip()))


def _clean_key(key: str) -> str:
    """Replace characters MLflow rejects in param/metric/tag keys and cap the length."""
    return _INVALID_KEY_CHARS.sub("_", key)[:MAX_KEY_LENGTH]


def _safe_items(values: Mapping | None, max_len: int) -> dict[str, str]:
    """Flatten, drop secrets, stringify and truncate ``values`` for params/tags."""
    out: dict[str, str] = {}
    for key, value in flatten(values or {}).items():
        if is_secret_key(key) or _is_secret_value(value):
            continue
        out[_clean_key(key)] = str(value)[:max_len]
    return out


def _to_float(value: object) -> float | None:
    """Numeric leaf -> float (bools as 0/1, 0-d arrays/tensors via ``.item()``); None if not numeric/NaN."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):
        result = float(value)
    elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        try:
            item = value.item()  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            return None
        return _to_float(item) if not hasattr(item, "item") else None
    else:
        return None
    return None if math.isnan(result) else result


def numeric_items(metrics: Mapping, prefix: str = "") -> dict[str, float]:
    """Flatten ``metrics`` and keep only numeric, non-NaN leaves as floats (keys cleaned for MLflow)."""
    out: dict[str, float] = {}
    for key, value in flatten(metrics, prefix).items():
        number = _to_float(value)
        if number is not None:
            out[_clean_key(key)] = number
    return out


# --------------------------------------------------------------------------------------------- runs
def _check_pipeline_id(pipeline_id: str) -> str:
    if not pipeline_id or "'" in pipeline_id or '"' in pipeline_id:
        raise ValueError(f"invalid pipeline_id {pipeline_id!r}: must be non-empty without quotes")
    return pipeline_id


def find_pipeline_run(pipeline_id: str) -> str | None:
    """Return the id of the parent run tagged ``r2m.pipeline_id=<pipeline_id>`` (oldest), or None."""
    exp_id = _ensure_configured()
    runs = _client().search_runs(
        [exp_id],
        filter_string=f"tags.`{TAG_PIPELINE_ID}` = '{_check_pipeline_id(pipeline_id)}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def pipeline_run(pipeline_id: str, tags: dict | None = None) -> str:
    """Get or create the parent run of ``pipeline_id`` and return its id.

    The run is found by its ``r2m.pipeline_id`` tag, so separate processes (``dvc repro``) share it. A new
    run is created with status RUNNING but is *not* pushed on MLflow's active-run stack; close it with
    :func:`finish_pipeline_run`. ``tags`` (secrets dropped) are set on the run in both cases.
    """
    _check_pipeline_id(pipeline_id)
    client = _client()
    extra = _safe_items(tags, MAX_TAG_VAL_LENGTH)
    run_id = find_pipeline_run(pipeline_id)
    if run_id is None:
        run_tags = {**extra, TAG_PIPELINE_ID: pipeline_id, TAG_ROLE: "pipeline", TAG_RUN_NAME: pipeline_id}
        run = client.create_run(_state["experiment_id"], tags=_resolve_context_tags(run_tags), run_name=pipeline_id)
        run_id = run.info.run_id
        # Two processes may race on creation: keep the oldest, remove ours.
        winner = find_pipeline_run(pipeline_id)
        if winner is not None and winner != run_id:
            client.delete_run(run_id)
            run_id = winner
    elif extra:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in extra.items()])
    return run_id


def set_run_status(run_id: str, status: str) -> None:
    """Set a run's status: ``RUNNING`` again (a later stage of a DVC pipeline), or end it (``FINISHED``,
    ``FAILED``, ``KILLED``), with the end time."""
    client = _client()
    if status == "RUNNING":
        client.update_run(run_id, status="RUNNING")
    else:
        client.set_terminated(run_id, status=status)


def set_tags(run_id: str, tags: Mapping) -> None:
    """Set ``tags`` (secrets dropped, values stringified and truncated) on a run."""
    items = [RunTag(k, v) for k, v in _safe_items(tags, MAX_TAG_VAL_LENGTH).items()]
    client = _client()
    for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=items[start : start + MAX_PARAMS_TAGS_PER_BATCH])


def log_new_params(run_id: str, params: Mapping) -> list[str]:
    """Log the (flattened, secret-free) ``params`` the run does not have yet; return the keys it already holds
    with another value (MLflow params are immutable, so those are left as they are)."""
    client = _client()
    have = client.get_run(run_id).data.params
    items = _safe_items(params, MAX_PARAM_VAL_LENGTH)
    _log_params(client, run_id, {k: v for k, v in items.items() if k not in have})
    return sorted(k for k, v in items.items() if k in have and have[k] != v)


def finish_pipeline_run(pipeline_id: str, status: str = "FINISHED") -> str | None:
    """Mark the parent run of ``pipeline_id`` terminated with ``status``; return its id (None if absent)."""
    run_id = find_pipeline_run(pipeline_id)
    if run_id is not None:
        _client().set_terminated(run_id, status=status)
    return run_id


def _resolve_context_tags(tags: dict[str, str]) -> dict[str, str]:
    """Add MLflow's default context tags (source, user, git commit) like ``mlflow.start_run`` does."""
    try:
        from mlflow.tracking.context import registry as context_registry

        return dict(context_registry.resolve_tags(tags))
    except Exception:  # pragma: no cover - context tags are nice to have only
        return dict(tags)


def _log_params(client: MlflowClient, run_id: str, params: Mapping | None) -> None:
    items = [Param(k, v) for k, v in _safe_items(params, MAX_PARAM_VAL_LENGTH).items()]
    for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + MAX_PARAMS_TAGS_PER_BATCH])


@contextmanager
def stage_run(
    stage: str,
    pipeline_id: str | None = None,
    params: Mapping | None = None,
    tags: Mapping | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Run the ``with`` body inside an MLflow run for ``stage``; yield the :class:`mlflow.ActiveRun`.

    With a ``pipeline_id`` (or, if None, the ``R2M_PIPELINE_ID`` environment variable) the run is nested
    under that pipeline's parent run (created if needed); otherwise it is a top-level run. ``params`` are
    flattened to ``a.b.c`` keys, stringified, truncated to MLflow's limit, and secret-looking keys/values are
    skipped. The run is tagged ``r2m.stage=<stage>``.

    The run is created with :class:`MlflowClient` and an explicit parent id, then made active on the
    *calling thread* (MLflow's active-run stack is thread-local), so this works from Prefect worker
    threads and ``mlflow.log_*`` calls in the body target the stage run. The run ends FINISHED, or FAILED
    (KILLED on KeyboardInterrupt) if the body raises; the exception is re-raised.
    """
    client = _client()
    pipeline_id = pipeline_id or os.environ.get(PIPELINE_ID_ENV) or None
    parent_id = pipeline_run(pipeline_id) if pipeline_id else None
    exp_id = client.get_run(parent_id).info.experiment_id if parent_id else _state["experiment_id"]

    run_tags = _safe_items(tags, MAX_TAG_VAL_LENGTH)
    run_tags.update({TAG_STAGE: stage, TAG_RUN_NAME: stage})
    if parent_id:
        run_tags.update({TAG_PARENT_RUN_ID: parent_id, TAG_PARENT_PIPELINE_ID: pipeline_id})
    failed = _failed_attempt(client, exp_id, stage, parent_id)
    if failed is not None:  # this run is a retry (Prefect's, or a rerun by hand) of a stage run that did not finish
        run_tags[TAG_RETRY_OF] = failed
    run = client.create_run(exp_id, tags=_resolve_context_tags(run_tags), run_name=stage)
    run_id = run.info.run_id
    try:
        _log_params(client, run_id, params)
        active = mlflow.start_run(run_id=run_id, nested=True)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise

    status = "FINISHED"
    try:
        yield active
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        top = mlflow.active_run()
        if top is not None and top.info.run_id == run_id:
            mlflow.end_run(status)
        else:  # the body ended or stacked runs itself: terminate ours by id
            client.set_terminated(run_id, status=status)


def _failed_attempt(client: MlflowClient, exp_id: str, stage: str, parent_id: str | None) -> str | None:
    """The id of the latest run of ``stage`` (under ``parent_id``) when it did not finish: FAILED or KILLED, or still
    RUNNING although a new run of the stage starts (its process died: a work directory has one writer, so nothing
    else can be running it), which is marked FAILED here. None when the latest run finished (or there is none)."""
    query = f"tags.`{TAG_STAGE}` = '{stage}'"
    if parent_id:
        query += f" and tags.`{TAG_PARENT_RUN_ID}` = '{parent_id}'"
    latest = client.search_runs([exp_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1)
    if not latest or latest[0].info.status == "FINISHED":
        return None
    run = latest[0]
    if run.info.status in ("RUNNING", "SCHEDULED"):
        client.set_tag(run.info.run_id, "r2m.ended_by", "a later run of the stage: this run's process had died")
        client.set_terminated(run.info.run_id, status="FAILED")
    return run.info.run_id


def _target_run(run_id: str | None) -> str:
    """``run_id`` or the calling thread's active run id; raise if neither (never auto-create a run)."""
    if run_id:
        return run_id
    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("no run_id given and no active MLflow run in this thread (use stage_run)")
    return active.info.run_id


def log_params(params: Mapping, run_id: str | None = None) -> None:
    """Log ``params`` (flattened, secrets skipped, stringified, truncated) to a run."""
    _log_params(_client(), _target_run(run_id), params)


def log_metrics_dict(
    metrics: Mapping, prefix: str = "", run_id: str | None = None, step: int | None = None
) -> dict[str, float]:
    """Log the numeric leaves of a (nested) metrics mapping; return what was logged.

    Keys are flattened (``prefix.a.b``); non-numeric leaves (strings, lists, None) are ignored, bools
    become 0/1 and NaN values are skipped. ``run_id`` defaults to this thread's active run.
    """
    values = numeric_items(metrics, prefix)
    rid = _target_run(run_id)
    ts = int(time.time() * 1000)
    batch = [Metric(k, v, ts, int(step or 0)) for k, v in values.items()]
    client = _client()
    for start in range(0, len(batch), MAX_METRICS_PER_BATCH):
        client.log_batch(rid, metrics=batch[start : start + MAX_METRICS_PER_BATCH])
    return values


def log_step_metrics(rows: Sequence[Mapping], step_key: str = "step", run_id: str | None = None) -> int:
    """Log per-step metrics (e.g. RL history: ``[{"step": 0, "reward": 0.1, ...}, ...]``) in batches.

    Each row's numeric leaves (flattened, NaN skipped) are logged at ``row[step_key]`` (the row index if
    the key is missing). Uses ``MlflowClient.log_batch`` in chunks of at most 1000 metrics. Returns the
    number of metric values logged.
    """
    rid = _target_run(run_id)
    ts = int(time.time() * 1000)
    batch: list[Metric] = []
    for index, row in enumerate(rows):
        step_value = row.get(step_key, index)
        step = int(step_value) if _to_float(step_value) is not None else index
        for key, value in numeric_items({k: v for k, v in row.items() if k != step_key}).items():
            batch.append(Metric(key, value, ts, step))
    client = _client()
    for start in range(0, len(batch), MAX_METRICS_PER_BATCH):
        client.log_batch(rid, metrics=batch[start : start + MAX_METRICS_PER_BATCH])
    return len(batch)


def log_artifacts(path: str | Path, artifact_path: str | None = None, run_id: str | None = None) -> None:
    """Upload a file or a directory (its contents) to a run's artefacts under ``artifact_path``."""
    path = Path(path)
    rid = _target_run(run_id)
    client = _client()
    if path.is_dir():
        client.log_artifacts(rid, str(path), artifact_path)
    elif path.is_file():
        client.log_artifact(rid, str(path), artifact_path)
    else:
        raise FileNotFoundError(f"cannot log missing artefact {path}")


# --------------------------------------------------------------------------------------------- registry
def _pinned_requirements() -> list[str]:
    """Pip requirements of a registered model, pinned to this environment (skips MLflow's slow inference)."""
    reqs = []
    for dist in ("mlflow", "torch", "transformers", "safetensors"):
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def _check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    has_config = any((model_dir / f).is_file() for f in ("config.json", "reward_model.json", "r2m_head.json"))
    if not has_config or not any(model_dir.rglob("*.safetensors")):
        raise ValueError(
            f"{model_dir} is not a saved model dir (needs config.json, reward_model.json or r2m_head.json, "
            "and *.safetensors)"
        )


def _signature(kind: str):
    """The pyfunc signature of a model kind: policy ``prompt`` strings in, completions out, with generation params;
    reward model / head ``(prompt, response)`` rows in, scores out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    if kind == "policy":
        return ModelSignature(
            inputs=Schema([ColSpec("string")]),  # one column of prompts: a list of strings, or a "prompt" column
            outputs=Schema([ColSpec("string")]),
            params=ParamSchema(
                [
                    ParamSpec("max_new_tokens", "long", 32),
                    ParamSpec("temperature", "double", 0.0),
                    ParamSpec("seed", "long", 0),
                    ParamSpec("raw_prompt", "boolean", False),
                ]
            ),
        )
    return ModelSignature(
        inputs=Schema([ColSpec("string", "prompt"), ColSpec("string", "response")]),
        outputs=Schema([ColSpec("double")]),
    )


@contextmanager
def _bundled_library() -> Iterator[str]:
    """A copy of the ``r2m`` package (code only, no shipped data samples) for the model's ``code_paths``: a
    registered version loads and predicts with the code that registered it, wherever it is served."""
    import shutil
    import tempfile

    package = Path(__file__).parent
    with tempfile.TemporaryDirectory(prefix="r2m-code-") as tmp:
        dst = Path(tmp) / "r2m"
        shutil.copytree(package, dst, ignore=shutil.ignore_patterns("__pycache__", "samples", "*.pyc"))
        yield str(dst)


def register_model_dir(
    model_dir: str | Path,
    name: str,
    *,
    run_id: str,
    kind: str,
    alias: str = "candidate",
    description: str = "",
    metrics: Mapping | None = None,
    source_root: str | Path | None = None,
    tags: Mapping[str, str] | None = None,
    extra_artifacts: Mapping[str, str | Path] | None = None,
    serving: Mapping[str, Any] | None = None,
) -> int:
    """Register a saved model directory as a new version of registered model ``name``; return the version.

    The directory (HF ``save_pretrained`` safetensors dir, a reward-model dir or an R2M head dir) is logged as an
    MLflow pyfunc via "models from code" (:mod:`r2m.registry_model`) with the directory as the ``model`` artifact
    (plus ``extra_artifacts``: an R2M head's trunk and policy), a copy of the ``r2m`` code (``code_paths``), the
    kind's signature and ``serving`` (how to prompt / score: artifact ``serving.json``), linked to ``run_id``
    (explicitly, no active run needed); nothing is pickled. The version gets tags ``r2m.kind=<kind>``,
    ``r2m.source_dir`` (relative to ``source_root`` when inside it) and ``tags`` (the promotion evidence,
    :mod:`r2m.promotion`), the ``description`` and ``alias`` (an audited move, :func:`move_alias`). ``metrics``
    (optional) are logged on ``run_id`` first.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {MODEL_KINDS}, got {kind!r}")
    model_dir = Path(model_dir).resolve()
    _check_model_dir(model_dir)
    artifacts = {"model": str(model_dir)}
    for key, path in (extra_artifacts or {}).items():
        _check_model_dir(Path(path))
        artifacts[key] = str(Path(path).resolve())
    client = _client()
    if metrics:
        log_metrics_dict(metrics, run_id=run_id)

    with _bundled_library() as code, warnings.catch_warnings():
        serving_file = Path(code).parent / "serving.json"
        serving_file.write_text(json.dumps({"kind": kind, **(serving or {})}, indent=2, sort_keys=True))
        artifacts["serving"] = str(serving_file)
        # the kind's explicit signature replaces type hints and an input example (running one would load the model)
        warnings.filterwarnings("ignore", message=".*(type hints|input example).*", category=UserWarning)
        info = Model.log(
            artifact_path=None,
            name=kind,
            flavor=mlflow.pyfunc,
            flavor_name="pyfunc.ModelFromCode",
            run_id=run_id,
            python_model=str(_REGISTRY_MODEL_CODE),
            artifacts=artifacts,
            code_paths=[code],
            signature=_signature(kind),
            pip_requirements=_pinned_requirements(),
            metadata={"r2m_kind": kind, "r2m_registered_model": name},
            tags={TAG_KIND: kind},
        )
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, tags={TAG_KIND: kind})
    version = client.create_model_version(
        name,
        source=info.model_uri,
        run_id=run_id,
        tags={TAG_KIND: kind, "r2m.source_dir": relative_posix(model_dir, source_root), **(tags or {})},
        description=description or None,
        model_id=info.model_id,
    )
    version_number = int(version.version)
    if alias:
        move_alias(name, alias, version_number, action="register", reason=description)
    return version_number


# --------------------------------------------------------------------------------------------- aliases + audit
TAG_AUDIT = "r2m.audit."


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return os.environ.get("USER", "unknown")


def audit_log(name: str) -> list[dict]:
    """Every alias move r2m made on registered model ``name``, oldest first: ``{"seq", "time", "action", "alias",
    "from", "to", "user", "reason"}`` (registered-model tags ``r2m.audit.<seq>``)."""
    tags = _client().get_registered_model(name).tags
    return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(TAG_AUDIT))]


def move_alias(name: str, alias: str, version: int, *, action: str, reason: str = "") -> dict:
    """Point ``alias`` of ``name`` at ``version`` and record the move (who, when, why, from which version) as the
    next ``r2m.audit.<seq>`` tag of the registered model and an ``r2m.alias.<alias>`` tag of the version."""
    from datetime import datetime

    client = _client()
    previous = get_version_by_alias(name, alias)
    client.set_registered_model_alias(name, alias, str(int(version)))
    entries = audit_log(name)
    entry = {
        "seq": (entries[-1]["seq"] + 1) if entries else 1,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "action": action,
        "alias": alias,
        "from": previous,
        "to": int(version),
        "user": _user(),
        "reason": reason[:2000],
    }
    client.set_registered_model_tag(name, f"{TAG_AUDIT}{entry['seq']:05d}", json.dumps(entry))
    client.set_model_version_tag(name, str(int(version)), f"r2m.alias.{alias}", f"{entry['time']} {action}")
    return entry


def set_alias(name: str, version: int, alias: str) -> None:
    """Point ``alias`` of registered model ``name`` at ``version`` (audited as action ``set``)."""
    move_alias(name, alias, version, action="set")


def alias_history(entries: Sequence[dict], alias: str = "champion") -> list[int]:
    """The versions that held ``alias``, as a stack replayed from the audit log: a promotion or set pushes its
    version, a rollback pops the version it replaced. The last element holds the alias now."""
    stack: list[int] = []
    for e in entries:
        if e["alias"] != alias:
            continue
        if e["action"] == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != e["to"]:
                stack.append(e["to"])
        else:
            stack.append(e["to"])
    return stack


def get_version_by_alias(name: str, alias: str) -> int | None:
    """Return the version number behind ``name@alias``, or None if the model or alias does not exist."""
    try:
        return int(_client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def load_registered(
    name: str, alias: str = "champion", *, version: int | None = None, dst_path: str | Path | None = None
) -> Path:
    """Return the local directory holding the model files of ``name@alias`` (or ``name`` version ``version``).

    For a local artefact store the returned path is inside the store (no copy; treat it as read-only) unless
    ``dst_path`` is given; remote stores download into ``dst_path`` or a temporary directory. The result
    can be passed to ``from_pretrained`` or loaded with safetensors.
    """
    _ensure_configured()
    if version is None and get_version_by_alias(name, alias) is None:
        raise LookupError(f"registered model {name!r} has no alias {alias!r}")
    uri = f"models:/{name}/{int(version)}" if version is not None else f"models:/{name}@{alias}"
    if dst_path is not None:
        Path(dst_path).mkdir(parents=True, exist_ok=True)
    root = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri,
            dst_path=str(dst_path) if dst_path is not None else None,
            tracking_uri=_state["tracking_uri"],
        )
    )
    pyfunc_conf = Model.load(str(root / "MLmodel")).flavors.get("python_function", {})
    rel = pyfunc_conf.get("artifacts", {}).get("model", {}).get("path")
    if rel is None:
        raise ValueError(f"{uri} was not registered by r2m.tracking.register_model_dir (no 'model' artifact)")
    return root / rel


def version_tags(name: str, version: int) -> dict[str, str]:
    """The tags of version ``version`` of ``name``."""
    return dict(_client().get_model_version(name, str(int(version))).tags)


def _require_model(name: str) -> None:
    try:
        _client().get_registered_model(name)
    except MlflowException as exc:
        raise LookupError(f"registered model {name!r} does not exist") from exc


def promote(
    name: str,
    decide: Callable[[int, dict, int | None, dict | None], Any],
    *,
    dry_run: bool = False,
    force: bool = False,
    from_alias: str = "candidate",
    to_alias: str = "champion",
) -> dict:
    """Move ``to_alias`` to the ``from_alias`` version if ``decide`` lets it (or, with ``force``, even if not: a
    reviewer's override, audited as action ``force`` with the failed checks as its reason).

    ``decide(candidate, candidate_tags, champion, champion_tags)`` (versions and their tags; ``champion`` None when
    no version holds ``to_alias``) returns an object with ``promote`` (bool), ``checks`` (``(passed, what)``
    pairs) and ``reason`` (:class:`r2m.promotion.Decision`). With ``dry_run`` nothing moves. Returns
    ``{"model", "candidate", "champion", "promote", "promoted", "forced", "dry_run", "checks", "reason"}``
    (``champion``: the version holding ``to_alias`` before the call). Failing the gate is not an error.

    Raises:
        LookupError: the registered model or its ``from_alias`` does not exist.
    """
    _require_model(name)
    candidate = get_version_by_alias(name, from_alias)
    if candidate is None:
        raise LookupError(f"registered model {name!r} has no {from_alias!r} alias")
    champion = get_version_by_alias(name, to_alias)
    decision = decide(
        candidate,
        version_tags(name, candidate),
        champion,
        version_tags(name, champion) if champion is not None else None,
    )
    result = {
        "model": name,
        "candidate": candidate,
        "champion": champion,
        "promote": bool(decision.promote),
        "promoted": False,
        "forced": False,
        "dry_run": dry_run,
        "checks": [{"passed": ok, "check": what} for ok, what in decision.checks],
        "reason": decision.reason,
    }
    if (decision.promote or (force and candidate != champion)) and not dry_run:
        action = "promote" if decision.promote else "force"
        move_alias(name, to_alias, candidate, action=action, reason=decision.reason)
        result["promoted"], result["forced"] = True, not decision.promote
    log.info("promote %s%s: %s", name, " (dry run)" if dry_run else "", decision.reason)
    return result


def rollback(name: str, *, alias: str = "champion", dry_run: bool = False) -> dict:
    """Move ``alias`` back to the version that held it before the current one (:func:`alias_history`), audited as
    a ``rollback``. Returns ``{"model", "from", "to", "rolled_back", "dry_run", "reason"}``.

    Raises:
        LookupError: no such model, or no earlier holder of ``alias`` in the audit log (or the alias was moved
            outside r2m since, so "previous" is unknown).
    """
    _require_model(name)
    current = get_version_by_alias(name, alias)
    history = alias_history(audit_log(name), alias)
    if current is None or not history or history[-1] != current:
        raise LookupError(
            f"{name}@{alias} is v{current}, but r2m's audit log says v{history[-1] if history else None}: the alias "
            "was moved outside r2m; move it with the MLflow UI or client instead"
        )
    if len(history) < 2:
        raise LookupError(f"{name}@{alias} v{current} has no previous holder to roll back to")
    target = history[-2]
    reason = f"rollback of {alias} from v{current} to v{target}"
    if not dry_run:
        move_alias(name, alias, target, action="rollback", reason=reason)
    log.info("%s%s", reason, " (dry run)" if dry_run else "")
    return {
        "model": name,
        "from": current,
        "to": target,
        "rolled_back": not dry_run,
        "dry_run": dry_run,
        "reason": reason,
    }


# --------------------------------------------------------------------------------------------- comparing runs
DEFAULT_RUN_METRICS = ("rm_test_accuracy", "*.gold_final", "*.gold_best_heldout", "*.win_rate_vs_sft")


def runs_table(
    metrics: Sequence[str] = DEFAULT_RUN_METRICS, stages: bool = False, max_results: int = 20
) -> tuple[list[str], list[list[str]]]:
    """An experiment's runs, newest first, as ``(header, rows)``: name, status, start (UTC), git commit (``*``:
    dirty), profile, seed and the metrics matching the ``metrics`` patterns (``fnmatch``). Pipeline (parent) runs
    only unless ``stages``."""
    import fnmatch
    from datetime import datetime

    exp_id = _ensure_configured()
    role = "" if stages else f"tags.`{TAG_ROLE}` = 'pipeline'"
    found = _client().search_runs(
        [exp_id], filter_string=role, order_by=["attributes.start_time DESC"], max_results=max_results
    )
    names = sorted({k for r in found for k in r.data.metrics if any(fnmatch.fnmatch(k, p) for p in metrics)})
    header = ["run", "status", "start (UTC)", "git", "profile", "seed", *names]
    rows = []
    for r in found:
        tags, params = r.data.tags, r.data.params
        commit = tags.get("r2m.git.commit", "")[:8] + ("*" if tags.get("r2m.git.dirty") == "true" else "")
        start = datetime.fromtimestamp(r.info.start_time / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
        values = [f"{r.data.metrics[k]:.4g}" if k in r.data.metrics else "" for k in names]
        rows.append(
            [
                r.info.run_name or r.info.run_id,
                r.info.status,
                start,
                commit,
                params.get("profile", ""),
                params.get("seed", ""),
                *values,
            ]
        )
    return header, rows
