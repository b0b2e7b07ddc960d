"""The stage table: every pipeline stage declared once.

Each :class:`Stage` names its function, the files it reads, what it writes, and the config it reads. Everything
else is derived from this table:

- ``dvc.yaml`` is generated from it (``r2m dvc-yaml``; a test fails when the committed file differs);
- the code a stage depends on is found by walking the imports of its module (:func:`code_deps`), so a change to
  any library module a stage imports reruns that stage;
- the Prefect flow and the ``r2m stage`` command iterate over it;
- a stage function only ever sees the config it declares (:func:`stage_config`): reading anything else is an error,
  so the declarations cannot drift from the code.

Matrix stages (``rl``, ``evaluate``) run once per ``<algo>-<method>`` of ``rl.algos`` x ``rl.methods``; ``{run}`` in
their paths stands for that name.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r2m.config import ALGOS, Config, ConfigError
from r2m.rl.methods import METHODS

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("r2m", "tasks")
# read by every stage: where files go (the paths below assume the defaults), the profile preset, the seed, threads
COMMON_PARAMS = ("profile", "seed", "threads", "paths")
# the stage table itself is not a code dependency: what it declares for a stage is written into dvc.yaml, which DVC
# compares on its own, so adding a stage does not rerun the others
NOT_CODE_DEPS = ("tasks/stages.py",)


@dataclass(frozen=True)
class Out:
    """One output of a stage: a file or directory (``persist``: kept between runs, for resume)."""

    path: str
    persist: bool = False
    cache: bool = True


@dataclass(frozen=True)
class Plot:
    """A per-step CSV that ``dvc plots show`` draws (``x`` vs ``y``)."""

    path: str
    x: str
    y: str


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    Attributes:
        name: the stage name (DVC, Prefect task, ``r2m stage NAME``, MLflow run).
        func: ``"module:function"``; the function is ``fn(cfg, workdir, **matrix) -> {"metrics": ..., ...}``.
        doc: one line for ``--help`` and the docs.
        deps: files and directories it reads (``{run}`` in matrix stages).
        params: config it reads besides :data:`COMMON_PARAMS`: whole sections (``"rl"``) or keys (``"rl.algos"``).
        outs: what it writes (DVC-cached).
        metrics: JSON metrics files it writes (``dvc metrics show``; kept in git, not in the DVC cache).
        plots: per-step CSV plots it writes (kept in git).
        images: PNG plots it writes (DVC outputs, listed under top-level ``plots:``).
        matrix: runs once per ``<algo>-<method>``.
        needs_mlflow: cannot run without MLflow (it writes to the model registry).
        prefect_retries: Prefect task retries, never on bad input (exit status 2): RL resumes from its last
            finished round, evaluation keeps the judge replies it has.
        optional: runs only when a method of ``rl.methods`` names it in its registry entry's ``needs``
            (:mod:`r2m.rl.methods`); its outputs are then deps of that method's RL runs only.
    """

    name: str
    func: str
    doc: str
    deps: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    outs: tuple[Out, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[Plot, ...] = ()
    images: tuple[str, ...] = ()
    matrix: bool = False
    needs_mlflow: bool = False
    prefect_retries: int = 0
    optional: bool = False

    def needed(self, cfg: Config) -> bool:
        """Whether the pipeline of ``cfg`` runs this stage (an optional one only for the methods that need it)."""
        return not self.optional or any(self.name in METHODS[m].needs for m in cfg.rl.methods)

    @property
    def module(self) -> str:
        return self.func.split(":")[0]

    def code(self) -> list[str]:
        """The project files this stage runs: its module and the stage entry point, with all they import."""
        return code_deps(self.module, ENTRY_POINT)

    def function(self) -> Callable[..., dict]:
        module, name = self.func.split(":")
        return getattr(importlib.import_module(module), name)

    def matrix_kwargs(self, run: str | None) -> dict[str, str]:
        """``{"algo": ..., "method": ...}`` of ``run`` for a matrix stage, ``{}`` otherwise."""
        if not self.matrix:
            return {}
        if run is None:
            raise ValueError(f"stage {self.name} runs per <algo>-<method>: name the run")
        algo, _, method = run.partition("-")
        # checked before anything runs or is written (a stage's --algo / --method, as rl.algos / rl.methods are)
        if algo not in ALGOS:
            raise ConfigError(f"--algo {algo!r}: unknown RL algorithm; valid: {', '.join(ALGOS)}")
        if method not in METHODS:
            raise ConfigError(f"--method {method!r}: unknown method; valid: {', '.join(METHODS)}")
        return {"algo": algo, "method": method}


RUN = "{run}"

STAGES: tuple[Stage, ...] = (
    Stage(
        name="prepare",
        func="tasks.prepare:prepare",
        doc="data prep: the embedded task's posts or a real dataset (data.source), SFT examples, RM / RL / eval "
        "prompts",
        params=("data",),
        outs=tuple(Out(f"data/{n}.jsonl") for n in ("posts", "sft", "rm_prompts", "rl_prompts", "eval_prompts")),
        metrics=("metrics/prepare.json",),
    ),
    Stage(
        name="sft",
        func="tasks.sft:sft",
        doc="the SFT reference policy (tokenizer trained here for the tiny policy) and its eval generations",
        deps=("data/sft.jsonl", "data/eval_prompts.jsonl"),
        params=("policy", "tokenizer", "sft", "evaluate.max_new_tokens", "evaluate.greedy", "rl.temperature"),
        outs=(Out("models/sft"),),
        metrics=("metrics/sft.json",),
    ),
    Stage(
        name="preferences",
        func="tasks.preferences:preferences",
        doc="the reward models' pairs: two samples of the SFT policy per prompt, labelled by the gold judge "
        "(label noise for train / held-out, none for test), optionally mixed with edit pairs; a real dataset's own "
        "pairs as they are",
        deps=("data/posts.jsonl", "data/rm_prompts.jsonl", "models/sft"),
        params=("preferences", "policy", "rl.max_completion_length", "rl.temperature"),
        outs=tuple(Out(f"data/{n}.jsonl") for n in ("rm_train", "rm_heldout", "rm_test")),
        metrics=("metrics/preferences.json",),
    ),
    Stage(
        name="reward_model",
        func="tasks.reward_model:reward_model",
        doc="the vanilla Bradley-Terry reward model (the frozen proxy every method is scored by) and the held-out "
        "RM (other pairs, other seed) that selects checkpoints",
        deps=("data/rm_train.jsonl", "data/rm_heldout.jsonl", "data/rm_test.jsonl", "models/sft"),
        params=("reward_model", "preferences.heldout_seed_offset"),
        outs=(Out("models/rm"), Out("models/rm_heldout")),
        metrics=("metrics/reward_model.json",),
    ),
    Stage(
        name="reward_ensemble",
        func="tasks.reward_ensemble:reward_ensemble",
        doc="the ensemble methods' reward models (own seeds, bootstrap resamples of the RM-train pairs) and WARM's "
        "weight average of RMs fine-tuned from the vanilla RM's initialisation",
        deps=("data/rm_train.jsonl", "data/rm_test.jsonl", "models/sft"),
        params=("reward_model", "methods.ensemble"),
        outs=(Out("models/rm_ensemble"),),
        metrics=("metrics/reward_ensemble.json",),
        optional=True,
    ),
    Stage(
        name="par_reference",
        func="tasks.par_reference:par_reference",
        doc="PAR's centre per RL prompt: the mean vanilla-RM score of the SFT reference's sampled responses",
        deps=("data/rl_prompts.jsonl", "models/sft", "models/rm"),
        params=("policy", "methods.par", "reward_model.max_length", "rl.max_completion_length", "rl.temperature"),
        outs=(Out("models/par_reference.jsonl"),),
        metrics=("metrics/par_reference.json",),
        optional=True,
    ),
    Stage(
        name="best_of_n",
        func="tasks.best_of_n:best_of_n",
        doc="best-of-n with the proxy RM (no training): gold and proxy of the proxy's pick against "
        "sqrt(KL_bon), n = 1, 2, 4, ..., best_of_n.n_max; says whether the RM carries true signal",
        deps=("data/eval_prompts.jsonl", "data/posts.jsonl", "models/sft", "models/rm", "models/rm_heldout"),
        params=("best_of_n", "policy", "reward_model.max_length", "rl.max_completion_length", "rl.temperature"),
        metrics=("metrics/best_of_n.json",),
        plots=(Plot("metrics/best_of_n.csv", x="sqrt_kl", y="gold"),),
        images=("plots/best_of_n.png",),
    ),
    Stage(
        name="rl",
        func="tasks.rl:rl",
        doc="online RL (TRL GRPO / RLOO) against the reward model, in rounds; R2M methods update their head",
        deps=(
            "data/rl_prompts.jsonl",
            "data/posts.jsonl",
            "data/rm_test.jsonl",
            "models/sft",
            "models/rm",
            "models/rm_heldout",
        ),
        params=(
            "policy",
            "reward_model",
            "r2m",
            "methods",
            *(f"rl.{k}" for k in ("steps", "rounds", "prompts_per_step", "num_generations")),
            *(f"rl.{k}" for k in ("max_completion_length", "temperature", "lr", "beta", "max_grad_norm")),
            "rl.monitor_sample",
            "rl.monitor_every",
            "rl.max_nonfinite_steps",
            "rl.max_reward_scale",
            "rl.bf16",
            "rl.use_vllm",
            *(f"rl.vllm_{k}" for k in ("mode", "server_base_url", "server_host", "server_port")),
            *(f"rl.vllm_{k}" for k in ("gpu_memory_utilization", "tensor_parallel_size", "enable_sleep_mode")),
        ),
        outs=(Out(f"models/rl/{RUN}", persist=True),),
        metrics=(f"metrics/rl/{RUN}.json",),
        plots=(Plot(f"metrics/rl/{RUN}.csv", x="step", y="gold_score"),),
        matrix=True,
        prefect_retries=1,
    ),
    Stage(
        name="evaluate",
        func="tasks.evaluate:evaluate",
        doc="a run's checkpoints: win rates (with 95% CIs; gold judge, or `judge` on a real dataset) of the final "
        "one, the best by the proxy and the best by the held-out RM, beside the gold-oracle round; proxy and gold "
        "scores, RM accuracy",
        deps=(
            f"models/rl/{RUN}",
            "models/rm",
            "models/rm_heldout",
            "models/sft",
            "data/eval_prompts.jsonl",
            "data/rm_test.jsonl",
            "data/posts.jsonl",
        ),
        params=("policy", "evaluate", "judge", "reward_model.max_length", "rl.temperature", "rl.steps", "rl.rounds"),
        outs=(Out(f"metrics/eval/{RUN}_generations.jsonl", cache=False),),
        metrics=(f"metrics/eval/{RUN}.json",),
        matrix=True,
        prefect_retries=1,  # a judge API still failing after the client's own retries; its replies are cached
    ),
    Stage(
        name="hidden_states",
        func="tasks.hidden_states:hidden_states",
        doc="hidden-state analysis of the SFT policy and every run's final policy",
        deps=("data/rm_test.jsonl", "models/sft", "models/rm", "models/rl"),
        params=("policy", "analysis", "reward_model.max_length", "rl.algos", "rl.methods"),
        images=("plots/hidden_states.png", "plots/hidden_states_reward.png"),
        metrics=("metrics/hidden_states.json",),
    ),
    Stage(
        name="report",
        func="tasks.report:report",
        doc="the summary table and the proxy/gold, gold/KL and length plots over every run",
        deps=(
            "metrics/sft.json",
            "metrics/reward_model.json",
            "metrics/best_of_n.json",
            "models/rl",  # the per-step rows of every run (models/rl/<run>/metrics.jsonl) for the plots
            "metrics/rl",
            "metrics/eval",
            "metrics/hidden_states.json",
        ),
        params=("rl.algos", "rl.methods", "rl.steps"),
        outs=(Out("metrics/summary.md", cache=False),),
        images=("plots/proxy_vs_gold.png", "plots/gold_vs_kl.png", "plots/length.png"),
        metrics=("metrics/summary.json",),
    ),
    Stage(
        name="register",
        func="tasks.register:register",
        doc="registers the best run's policy, the reward model and the R2M head in MLflow (alias candidate), each "
        "with the held-out evidence its promotion gate reads",
        deps=(
            "metrics/summary.json",
            "metrics/eval",
            "metrics/reward_model.json",
            "models/rm",
            "models/rl",
            "data/eval_prompts.jsonl",
            "data/rm_test.jsonl",
        ),
        params=("mlflow", "rl.algos", "rl.methods", "policy", "reward_model.max_length"),
        needs_mlflow=True,
    ),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def get(name: str) -> Stage:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(NAMES)}") from None


# --- config views ------------------------------------------------------------------------------------------------


class _Undeclared:
    """Stands in for config a stage did not declare: any attribute read names the stage and the key."""

    def __init__(self, stage: str, key: str, visible: Any = None, keys: frozenset[str] = frozenset()):
        self._stage, self._key, self._visible, self._keys = stage, key, visible, keys

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self._keys:
            return getattr(self._visible, name)
        raise ConfigError(
            f"stage {self._stage!r} reads config '{self._key}.{name}' but does not declare it: add it to the "
            "stage's params in tasks/stages.py and run `r2m dvc-yaml`"
        )

    def __deepcopy__(self, memo: dict) -> _Undeclared:
        return self


def declared_keys(stage: Stage) -> dict[str, set[str] | None]:
    """``{section: None (whole section) | {keys}}`` of everything ``stage`` may read."""
    out: dict[str, set[str] | None] = {}
    for p in (*COMMON_PARAMS, *stage.params):
        section, _, key = p.partition(".")
        if not key:
            out[section] = None
        elif out.get(section, set()) is not None:
            out.setdefault(section, set()).add(key)
    return out


class StageConfig(Config):
    """The config as one stage sees it (:func:`stage_config`); ``to_dict`` holds only what the stage declares."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, _Undeclared):
                if v._keys:
                    out[f.name] = {k: copy.deepcopy(getattr(v._visible, k)) for k in sorted(v._keys)}
            else:
                out[f.name] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else copy.deepcopy(v)
        return out


def stage_config(cfg: Config, stage: Stage) -> StageConfig:
    """A copy of ``cfg`` in which only what ``stage`` declares can be read (anything else raises ConfigError)."""
    allowed = declared_keys(stage)
    values = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not (f.name in allowed and allowed[f.name] is None):
            value = _Undeclared(stage.name, f.name, value, frozenset(allowed.get(f.name) or ()))
        values[f.name] = value  # top-level scalars (profile, seed, threads) are common params
    return StageConfig(**values)


def declared_params(cfg: Config, stage: Stage) -> dict[str, Any]:
    """The values of what ``stage`` declares (for MLflow params): ``{"rl": {...}} | {"rl.algos": [...]}``."""
    d = cfg.to_dict()
    out: dict[str, Any] = {}
    for p in stage.params:
        section, _, key = p.partition(".")
        out[p] = d[section][key] if key else d[section]
    return out


# --- code dependencies ---------------------------------------------------------------------------------------------


def _module_file(name: str) -> Path | None:
    """The file of project module ``name`` (``r2m.data.io`` -> r2m/data/io.py), None if it is not one."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(path: Path) -> set[str]:
    """Modules imported anywhere in ``path`` (top level and inside functions), as candidate dotted names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from r2m import tracking`
    return found


ENTRY_POINT = "tasks.__main__"  # `python -m tasks <stage>`: runs every stage (config view, seeding, threads)


def code_deps(*modules: str) -> list[str]:
    """Every project file ``modules`` import, transitively, with the packages' ``__init__`` files (repo-relative,
    sorted); data files shipped inside a package (e.g. judge templates) are added for the packages they live in."""
    todo, seen = list(modules), set()
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            f = _module_file(".".join(parts[:i]))
            if f is not None and f not in files:
                files.add(f)
                todo.extend(_imports(f))
    rel = {f.relative_to(ROOT).as_posix() for f in files} - set(NOT_CODE_DEPS)
    for f in list(rel):
        assets = ROOT / Path(f).parent / "templates"
        if f.endswith("__init__.py") and assets.is_dir():
            rel.add(assets.relative_to(ROOT).as_posix())
    return sorted(rel)
