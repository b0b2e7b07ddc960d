"""Dry run of a profile: the models' shapes, the R2M head and the judge, checked with no download, GPU or weights.

- **Models**: the policy (``policy.source``) and the reward model's trunk (``reward_model.trunk``) are built as
  stand-ins from their ``config.json`` on the meta device (no memory, no weights): shipped in
  ``configs/models/<org>__<name>/``, a local model directory, or the local Hugging Face cache (never downloaded);
  ``tiny`` is built from its sizes. Their real hidden sizes are read off, and a meta forward checks the policy's last
  hidden state h [B, S, D_p] and the RM's reward token embedding H [B, D_rm].
- **R2M head**: the real :class:`~r2m.models.r2m_head.R2MRewardHead` (rm_dim = D_rm, policy_dim = D_p, attn_dim and
  num_heads from ``r2m.*``) scores the whole rollout batch on meta (shapes), then one group of real CPU tensors with
  a GREBT backward: rewards [K], the optimiser's parameters are exactly the cross-attention's and phi's, each gets a
  finite non-zero gradient, and padded feedback positions get none.
- **Judge**: kind, template (parsed), endpoint; the API key's environment variable is named, never read.

Shapes: B = rl.prompts_per_step x rl.num_generations (one rollout batch), K = rl.num_generations (one group),
S = reward_model.max_length (query + response as the RM and R2M read them). Errors are one-line ConfigErrors.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from r2m.config import Config, ConfigError
from r2m.judges.templates import BUILTIN_TEMPLATES, TemplateError, load_template
from r2m.losses import grebt_terms
from r2m.models.r2m_head import R2MHeadConfig, R2MRewardHead
from r2m.models.reward_model import pool_last, trunk_of
from r2m.schedule import omega

MODELS_DIR = Path(__file__).resolve().parent.parent / "configs" / "models"
ALIASES = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # policy.source names the builders know
REAL_SEQ = 32  # tokens per row of the real-tensor head check (the full [B, S] runs on meta)
SHIFT_ONLY = "head.bias"  # phi's bias: GREBT is invariant to a shift of all rewards, so its gradient is ~0
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ModelSpec:
    """Where one model's config comes from: ``key`` (the config key naming it), its value and the config dict."""

    role: str
    key: str
    source: str
    config: dict[str, Any]
    origin: str


# --- finding a model's config.json ---------------------------------------------------------------------------------


def config_dir_name(model_id: str) -> str:
    """``org/name`` -> ``org__name``, the directory of its shipped config under ``configs/models/``."""
    return model_id.strip("/").replace("/", "__")


def _read_config(path: Path, key: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{key}: cannot read {path}: {e}") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ConfigError(f"{key}: {path} is not a transformers config.json (no model_type)")
    return data


def _cached_config(model_id: str) -> Path | None:
    """The local Hugging Face cache's config.json of ``model_id`` (never downloads), None when not cached."""
    if model_id.count("/") != 1:
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id=model_id, filename="config.json")
    except Exception:  # an id the hub client rejects is simply not cached
        return None
    return Path(found) if isinstance(found, str) else None


def find_model_config(source: str, key: str, models_dir: Path, workdir: Path) -> tuple[dict[str, Any], str]:
    """The config dict of model ``source`` (the value of config key ``key``) and where it was found: a local model
    directory, ``models_dir/<org>__<name>/config.json`` or the local Hugging Face cache."""
    model_id = ALIASES.get(source, source)
    for local in (Path(source), workdir / source):
        if (local / "config.json").is_file():
            return _read_config(local / "config.json", key), str(local / "config.json")
    shipped = models_dir / config_dir_name(model_id) / "config.json"
    if shipped.is_file():
        return _read_config(shipped, key), _display(shipped)
    cached = _cached_config(model_id)
    if cached is not None:
        return _read_config(cached, key), f"HF cache ({cached})"
    raise ConfigError(
        f"{key}={source!r}: the dry run needs its config.json (no weights): put it at "
        f"{_display(shipped)} (copied from the hub) or have the model in the local Hugging Face cache"
    )


def _display(path: Path) -> str:
    """``path`` relative to the current directory when it is under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def tiny_config(cfg: Config) -> dict[str, Any]:
    """The config of ``policy.source: tiny`` (as :func:`r2m.models.builders.build_tiny_policy` builds it)."""
    p = cfg.policy
    if p.num_heads < 1 or p.hidden_size % p.num_heads:
        raise ConfigError(f"policy.num_heads ({p.num_heads}) must divide policy.hidden_size ({p.hidden_size})")
    return {
        "model_type": "gpt_neox",
        "architectures": ["GPTNeoXForCausalLM"],
        "vocab_size": cfg.tokenizer.vocab_size,
        "hidden_size": p.hidden_size,
        "num_hidden_layers": p.num_layers,
        "num_attention_heads": p.num_heads,
        "intermediate_size": 4 * p.hidden_size,
        "max_position_embeddings": p.max_positions,
        "rotary_pct": 0.25,
        "use_parallel_residual": True,
        "tie_word_embeddings": False,
    }


def model_specs(cfg: Config, models_dir: Path, workdir: Path) -> tuple[ModelSpec, ModelSpec]:
    """The policy's and the reward model's :class:`ModelSpec` (an RM trunk ``sft`` is the SFT policy's)."""
    src = cfg.policy.source
    if src == "tiny":
        policy = ModelSpec("policy", "policy.source", src, tiny_config(cfg), "built from policy.* (tiny)")
    else:
        found = find_model_config(src, "policy.source", models_dir, workdir)
        policy = ModelSpec("policy", "policy.source", src, *found)
    trunk = cfg.reward_model.trunk
    if trunk == "sft":
        return policy, ModelSpec("reward model", "reward_model.trunk", "sft", policy.config, "the SFT policy's trunk")
    found = find_model_config(trunk, "reward_model.trunk", models_dir, workdir)
    return policy, ModelSpec("reward model", "reward_model.trunk", trunk, *found)


# --- stand-ins on the meta device ---------------------------------------------------------------------------------


def is_classifier(config: dict[str, Any]) -> bool:
    """Whether a config.json is a sequence-classification checkpoint (a reward model with a score head)."""
    return any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or ())


def build_standin(spec: ModelSpec, kind: str) -> nn.Module:
    """A stand-in of ``spec`` on the meta device: ``kind`` = ``causal_lm`` (the policy), ``trunk`` (an RM trunk, as
    ``reward_model.trunk`` loads it) or ``classifier`` (a trained RM with its score head)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    classes = {"causal_lm": AutoModelForCausalLM, "trunk": AutoModel, "classifier": AutoModelForSequenceClassification}
    values = {k: v for k, v in spec.config.items() if k != "model_type"}
    try:
        config = AutoConfig.for_model(spec.config["model_type"], **values)
        with torch.device("meta"):
            return classes[kind].from_config(config)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{spec.key}={spec.source!r}: no stand-in from {spec.origin}: {line}") from None


def describe(spec: ModelSpec, model: nn.Module) -> dict[str, Any]:
    """The dimensions the pipeline depends on, read off the stand-in's config, and its parameter count."""
    c = model.config
    heads = int(c.num_attention_heads)
    return {
        "role": spec.role,
        "key": spec.key,
        "source": spec.source,
        "config": spec.origin,
        "model_type": c.model_type,
        "architecture": type(model).__name__,
        "hidden_size": int(c.hidden_size),
        "num_layers": int(c.num_hidden_layers),
        "num_heads": heads,
        "num_kv_heads": int(getattr(c, "num_key_value_heads", None) or heads),
        "vocab_size": int(c.vocab_size),
        "max_positions": int(c.max_position_embeddings),
        "params": sum(p.numel() for p in model.parameters()),
    }


@torch.no_grad()
def meta_forward(model: nn.Module, batch: int, seq: int) -> Tensor:
    """The trunk's last hidden state [batch, seq, D] for token ids [batch, seq], on meta. No attention mask and a
    (meta) KV cache: without them transformers inspects the mask's or the position ids' values, which meta tensors
    do not have (every position counts as real)."""
    ids = torch.zeros(batch, seq, dtype=torch.long, device="meta")
    return trunk_of(model)(input_ids=ids, use_cache=True).last_hidden_state


def check_policy(spec: ModelSpec, batch: int, seq: int) -> dict[str, Any]:
    """The policy stand-in: a causal LM whose last hidden state is h [B, S, D_p]."""
    if is_classifier(spec.config):
        raise ConfigError(f"policy.source={spec.source!r} is a sequence-classification checkpoint, not a causal LM")
    model = build_standin(spec, "causal_lm")
    info = describe(spec, model)
    h = meta_forward(model, batch, seq)
    _expect(h, (batch, seq, info["hidden_size"]), f"policy {spec.source}: last hidden state")
    return {**info, "last_hidden": list(h.shape)}


def check_reward_model(spec: ModelSpec, pretrained_head: bool, batch: int, seq: int) -> dict[str, Any]:
    """The RM trunk stand-in: H [B, D_rm] at the last real token; with ``pretrained_head`` also its score head."""
    if pretrained_head and not is_classifier(spec.config):
        archs = ", ".join(spec.config.get("architectures") or ["none"])
        raise ConfigError(
            f"reward_model.pretrained_head: {spec.source!r} ({spec.origin}) is not a sequence-classification "
            f"checkpoint (architectures: {archs}), so it has no score head to use"
        )
    model = build_standin(spec, "classifier" if pretrained_head else "trunk")
    info = describe(spec, model)
    d_rm = info["hidden_size"]
    hidden = meta_forward(model, batch, seq)
    rte = pool_last(hidden, torch.ones(batch, seq, dtype=torch.long, device="meta"))
    _expect(rte, (batch, d_rm), f"reward model {spec.source}: reward token embedding")
    info["rte"] = list(rte.shape)
    info["score_head"] = _score_head(model, d_rm) if pretrained_head else None
    return info


def _score_head(model: nn.Module, d_rm: int) -> dict[str, Any]:
    """The classifier's score layer (phi's initial value with reward_model.pretrained_head): one output of D_rm."""
    layer = getattr(model, "score", None)
    if not isinstance(layer, nn.Linear) or tuple(layer.weight.shape) != (1, d_rm):
        shape = tuple(layer.weight.shape) if isinstance(layer, nn.Linear) else None
        raise ConfigError(
            f"reward_model.pretrained_head: the checkpoint's score head is {shape}, phi needs one output of "
            f"D_rm = {d_rm} (a single-label classifier)"
        )
    return {"weight": list(layer.weight.shape), "bias": layer.bias is not None}


def _expect(t: Tensor, shape: Sequence[int], what: str) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ConfigError(f"{what} is {list(t.shape)}, expected {list(shape)}")


# --- the R2M head ------------------------------------------------------------------------------------------------


def head_config(cfg: Config, d_rm: int, d_p: int, use_attention: bool = True) -> R2MHeadConfig:
    """The head :func:`r2m.rl.r2m.build_head` builds for these dims (attn_dim 0 = D_rm), with the divisibility of
    r2m.attn_dim by r2m.num_heads checked first."""
    attn_dim = cfg.r2m.attn_dim or d_rm
    heads = cfg.r2m.num_heads
    if heads < 1 or attn_dim % heads:
        width = f"r2m.attn_dim ({attn_dim})" if cfg.r2m.attn_dim else f"r2m.attn_dim (0 = D_rm = {d_rm})"
        raise ConfigError(f"r2m.num_heads ({heads}) must divide {width}")
    return R2MHeadConfig(
        rm_dim=d_rm,
        policy_dim=d_p,
        attn_dim=attn_dim,
        num_heads=heads,
        use_attention=use_attention,
        omega_floor=cfg.r2m.omega_floor,
        total_steps=cfg.r2m.horizon or cfg.rl.steps,
        out_init_gain=cfg.r2m.out_init_gain,
    )


def expected_params(hc: R2MHeadConfig) -> dict[str, int]:
    """Parameter counts of the head's parts: W_q [D_rm, d], W_k and W_v [D_p, d], W_o [d, D_rm]; phi = D_rm + 1."""
    attn = hc.attn_dim * (2 * hc.rm_dim + 2 * hc.policy_dim) if hc.use_attention else 0
    return {"cross_attention": attn, "phi": hc.rm_dim + 1}


def meta_head_rewards(hc: R2MHeadConfig, batch: int, seq: int, om: float) -> Tensor:
    """Rewards [B] of the head on the whole rollout batch, H [B, D_rm] and h [B, S, D_p], on meta."""
    with torch.device("meta"):
        head = R2MRewardHead(hc)
        rte = torch.empty(batch, hc.rm_dim)
        feedback = torch.empty(batch, seq, hc.policy_dim) if hc.use_attention else None
        mask = torch.ones(batch, seq, dtype=torch.bool) if hc.use_attention else None
    with torch.no_grad():
        return head(rte, feedback, mask, om)


def real_group_check(hc: R2MHeadConfig, group: int, seq: int, om: float, alpha: float, seed: int) -> dict[str, Any]:
    """One group of K random responses on CPU (the last row half padding): rewards [K], a GREBT backward, and where
    the gradients go. H and h stand for the frozen trunk's and the no-grad policy pass's outputs; they take
    gradients here only to probe that padded positions get none."""
    with torch.random.fork_rng(devices=[]):  # seeded like build_head, leaving the caller's generator alone
        torch.manual_seed(seed)
        head = R2MRewardHead(hc)
    gen = torch.Generator().manual_seed(seed)
    rte = torch.randn(group, hc.rm_dim, generator=gen).requires_grad_(True)
    feedback = torch.randn(group, seq, hc.policy_dim, generator=gen).requires_grad_(True)
    mask = torch.ones(group, seq, dtype=torch.bool)
    mask[-1, seq // 2 :] = False
    rewards = head(rte, feedback if hc.use_attention else None, mask if hc.use_attention else None, om)
    _expect(rewards, (group,), "R2M head: rewards of one group")
    grebt_terms(rewards.view(1, group), alpha=alpha)["grebt"].backward()
    grads = {name: p.grad for name, p in head.named_parameters()}
    # phi's bias gets (numerically) zero: BT reads reward differences and GRE z-scores, both blind to a shift
    dead = [n for n, g in grads.items() if g is None or not torch.isfinite(g).all() or not (n == SHIFT_ONLY or g.any())]
    if dead:
        raise ConfigError(
            f"R2M head: no finite non-zero gradient on {', '.join(dead)} at omega(T) = {om:g} (r2m.omega_floor 1 "
            "leaves the cross-attention untrained)"
        )
    trained = {id(p) for p in head.trainable_parameters()}
    if trained != {id(p) for p in head.parameters()}:
        raise ConfigError("R2M head: its optimiser would step parameters outside the cross-attention and phi")
    padded = feedback.grad[~mask].abs().sum().item() if hc.use_attention else 0.0
    if padded != 0.0:
        raise ConfigError("R2M head: padded feedback positions receive gradient (the mask leaks)")
    counts = {"cross_attention": _numel(head.attn), "phi": _numel(head.head)}
    if counts != expected_params(hc):
        raise ConfigError(f"R2M head: parameter counts {counts}, expected {expected_params(hc)} from its dims")
    return {
        "rewards": list(rewards.shape),
        "grad_params": sorted(n for n in grads if n != SHIFT_ONLY),
        "padded_grad": padded,
        "param_counts": counts,
    }


def _numel(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def check_head(cfg: Config, d_rm: int, d_p: int, use_attention: bool = True) -> dict[str, Any]:
    """The R2M head at the profile's dims: shapes on meta for the rollout batch, gradients on one real group."""
    hc = head_config(cfg, d_rm, d_p, use_attention)
    group, seq = cfg.rl.num_generations, cfg.reward_model.max_length
    batch = cfg.rl.prompts_per_step * group
    om = omega(hc.total_steps, hc.total_steps, hc.omega_floor) if use_attention else 1.0
    rewards = meta_head_rewards(hc, batch, seq, om)
    _expect(rewards, (batch,), "R2M head: rewards of the rollout batch")
    counts = expected_params(hc)
    head_params = counts["cross_attention"] + counts["phi"]
    real = real_group_check(hc, group, min(seq, REAL_SEQ), om, cfg.r2m.alpha, cfg.seed)
    return {
        "use_attention": use_attention,
        "rm_dim": d_rm,
        "policy_dim": d_p,
        "attn_dim": hc.attn_dim if use_attention else 0,
        "num_heads": hc.num_heads if use_attention else 0,
        "omega_T": om,
        "batch": batch,
        "group": group,
        "seq": seq,
        "rte": [batch, d_rm],
        "feedback": [batch, seq, d_p] if use_attention else None,
        "rewards": list(rewards.shape),
        "params": {**counts, "total": head_params},
        "real": {"group": group, "seq": min(seq, REAL_SEQ), **real},
    }


def length_checks(cfg: Config, models: Sequence[dict[str, Any]]) -> None:
    """The token budgets fit the models: S = reward_model.max_length within every model's positions, and room
    for a prompt beside the longest completion."""
    s, completion = cfg.reward_model.max_length, cfg.rl.max_completion_length
    if completion >= s:
        raise ConfigError(
            f"rl.max_completion_length ({completion}) must be < reward_model.max_length ({s}): the reward model "
            "would read no prompt"
        )
    for m in models:
        if s > m["max_positions"]:
            raise ConfigError(
                f"reward_model.max_length ({s}) exceeds the {m['role']} {m['source']}'s max_position_embeddings "
                f"({m['max_positions']})"
            )
    if cfg.sft.steps > 0 and cfg.sft.max_length > models[0]["max_positions"]:
        raise ConfigError(
            f"sft.max_length ({cfg.sft.max_length}) exceeds the policy's max_position_embeddings "
            f"({models[0]['max_positions']})"
        )


# --- the judge -----------------------------------------------------------------------------------------------------


def check_judge(cfg: Config) -> dict[str, Any]:
    """The judge's config: kind, template (parsed), endpoint. The API key's variable is named, never read."""
    j = cfg.judge
    if j.kind == "gold":
        return {"kind": "gold", "detail": "the embedded task's programmatic gold judge (no template, no endpoint)"}
    try:
        template = load_template(j.template)
    except (TemplateError, OSError) as e:
        raise ConfigError(f"judge.template: {e}") from None
    out = {
        "kind": j.kind,
        "template": j.template,
        "template_builtin": j.template in BUILTIN_TEMPLATES,
        "answer_key": template.answer_key,
    }
    if j.kind == "openai":
        return {**out, **_check_openai(cfg)}
    if j.temperature != 0:
        raise ConfigError(f"judge.temperature must be 0 for the local judge (it decodes greedily), got {j.temperature}")
    detail = f"local chat model {j.local_model}, greedy, answer {j.local_answer}"
    return {**out, "model": j.local_model, "detail": detail}


def _check_openai(cfg: Config) -> dict[str, Any]:
    j = cfg.judge
    if not j.model.strip():
        raise ConfigError("judge.model: the OpenAI-compatible judge needs a model name")
    if not re.match(r"https?://", j.base_url):
        raise ConfigError(f"judge.base_url must start with http:// or https://, got {j.base_url!r}")
    if not _ENV_NAME.fullmatch(j.api_key_env):
        raise ConfigError(f"judge.api_key_env must name an environment variable, got {j.api_key_env!r}")
    if j.concurrency < 1 or j.max_retries < 0 or j.timeout_s <= 0:
        raise ConfigError(
            "judge: concurrency must be >= 1, max_retries >= 0 and timeout_s > 0, got "
            f"{j.concurrency}, {j.max_retries}, {j.timeout_s}"
        )
    return {
        "model": j.model,
        "endpoint": f"{j.base_url.rstrip('/')}/chat/completions",
        "api_key_env": j.api_key_env,
        "detail": f"{j.model} at {j.base_url}, key from ${j.api_key_env} (named, not read)",
    }


# --- the whole dry run ---------------------------------------------------------------------------------------------


def dry_run(
    cfg: Config,
    stages: list[dict[str, Any]] | None = None,
    models_dir: str | Path | None = None,
    workdir: str | Path = ".",
) -> dict[str, Any]:
    """Check ``cfg``'s models, R2M head and judge (and report ``stages``, the resolved stage table that
    ``flows.dry_run`` passes in: the library does not import the stages). Returns the report, its printable table
    under ``"table"``; a problem is a one-line :class:`ConfigError`. Reads the models' config.json files and the judge
    template; writes nothing."""
    mdir = Path(models_dir) if models_dir is not None else MODELS_DIR
    judge = check_judge(cfg)  # first: it builds nothing
    batch, seq = cfg.rl.prompts_per_step * cfg.rl.num_generations, cfg.reward_model.max_length
    policy_spec, rm_spec = model_specs(cfg, mdir, Path(workdir))
    policy = check_policy(policy_spec, batch, seq)
    rm = check_reward_model(rm_spec, cfg.reward_model.pretrained_head, batch, seq)
    length_checks(cfg, [policy, rm])
    heads = [check_head(cfg, rm["hidden_size"], policy["hidden_size"])]
    if "iter_head" in cfg.rl.methods:
        heads.append(check_head(cfg, rm["hidden_size"], policy["hidden_size"], use_attention=False))
    report = {
        "ok": True,
        "profile": cfg.profile,
        "runs": cfg.run_names(),
        "stages": stages,
        "models": {"policy": policy, "reward_model": rm},
        "heads": heads,
        "judge": judge,
        "notes": notes(cfg, rm_spec, rm),
    }
    report["table"] = format_report(report)
    return report


def notes(cfg: Config, rm_spec: ModelSpec, rm: dict[str, Any]) -> list[str]:
    """What a reader of the report should know that is not an error."""
    out = []
    head = rm.get("score_head")
    if head is not None:
        bias = "with a bias" if head["bias"] else "without a bias (phi's bias starts at 0)"
        out.append(f"phi starts as {rm_spec.source}'s score head {head['weight']}, {bias}")
    elif is_classifier(rm_spec.config):
        out.append(
            f"reward_model.trunk {rm_spec.source} is a trained reward model: its score head is dropped and a fresh "
            "one trained unless reward_model.pretrained_head is true"
        )
    if cfg.rl.bf16:
        out.append("rl.bf16 is true: the RL stage needs a CUDA device (the dry run does not)")
    return out


# --- the printable report ------------------------------------------------------------------------------------------


def human(n: int) -> str:
    """A parameter count: 8.03B, 134.5M, 4.1K."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.{2 if unit == 'B' else 1}f}{unit}"
    return str(n)


def _shape(s: Sequence[int] | None) -> str:
    return "-" if s is None else "[" + ", ".join(str(x) for x in s) + "]"


def format_report(report: dict[str, Any]) -> str:
    """The report as text: stages, models, R2M head, judge, notes."""
    lines = [f"R2M dry run of profile {report['profile']!r}: config loads; runs: {', '.join(report['runs'])}"]
    lines += _stage_lines(report["stages"])
    lines += _model_lines(report["models"])
    for h in report["heads"]:
        lines += _head_lines(h)
    lines += ["", f"Judge: {report['judge']['kind']}: {_judge_text(report['judge'])}"]
    lines += [f"Note: {n}" for n in report["notes"]]
    lines += ["", "Dry run OK: nothing was run, downloaded or written."]
    return "\n".join(lines)


def _stage_lines(stages: list[dict[str, Any]] | None) -> list[str]:
    if stages is None:
        return ["", "Stages: not resolved (call flows.dry_run for the stage table)"]
    out = ["", f"Stages ({len(stages)} to run, in order; every input is an earlier stage's output):"]
    for s in stages:
        runs = f"x{len(s['runs'])}: {', '.join(s['runs'])}" if s["matrix"] else "x1"
        mlflow = ", needs MLflow" if s["needs_mlflow"] else ""
        out.append(f"  {s['name']} ({runs}{mlflow})")
        for label, items in (("params", s["params"]), ("reads", s["deps"]), ("writes", s["writes"])):
            text = textwrap.fill(", ".join(items) or "-", width=116, subsequent_indent=" " * 12)
            out.append(f"    {label + ':':<8}{text}")
    return out


def _model_lines(models: dict[str, dict[str, Any]]) -> list[str]:
    head = f"  {'':<13}{'type':<10}{'hidden':>7}{'layers':>7}{'heads':>6}{'kv':>4}" + (
        f"{'vocab':>8}{'max pos':>8}{'params':>9}"
    )
    out = ["", "Models (stand-ins on the meta device, built from config.json; no weights):", head]
    for m in models.values():
        out.append(
            f"  {m['role']:<13}{m['model_type']:<10}{m['hidden_size']:>7}{m['num_layers']:>7}{m['num_heads']:>6}"
            f"{m['num_kv_heads']:>4}{m['vocab_size']:>8}{m['max_positions']:>8}{human(m['params']):>9}"
        )
        out.append(f"  {'':<13}{m['key']} = {m['source']} ({m['architecture']}; config: {m['config']})")
    p, r = models["policy"], models["reward_model"]
    h, rte = _shape(p["last_hidden"]), _shape(r["rte"])
    out.append(f"  policy last hidden state h {h}, RM reward token embedding H {rte}")
    return out


def _head_lines(h: dict[str, Any]) -> list[str]:
    real = h["real"]
    if h["use_attention"]:
        title = (
            f"R2M head: D_rm {h['rm_dim']}, D_p {h['policy_dim']}, attn_dim {h['attn_dim']}, heads {h['num_heads']}"
            f" (d_head {h['attn_dim'] // h['num_heads']}); cross-attention {human(h['params']['cross_attention'])}"
            f" + phi {human(h['params']['phi'])} parameters"
        )
        full = f"H {_shape(h['rte'])} + h {_shape(h['feedback'])} -> r {_shape(h['rewards'])}"
    else:
        title = f"iter_head (phi only): D_rm {h['rm_dim']}; phi {human(h['params']['phi'])} parameters"
        full = f"H {_shape(h['rte'])} -> r {_shape(h['rewards'])}"
    if h["use_attention"]:
        group = f"K = {real['group']}, S = {real['seq']}, last row half padding"
        batch = f"B = {h['batch']}, S = {h['seq']}, omega(T) = {h['omega_T']:g}"
        padding = "; none at padded positions"
    else:
        group, batch, padding = f"K = {real['group']}", f"B = {h['batch']}", ""
    grads = (
        f"one real group on CPU ({group}): r {_shape(real['rewards'])}; GREBT gradients reach only "
        f"{', '.join(real['grad_params'])} ({SHIFT_ONLY}: ~0, GREBT is shift-invariant){padding}"
    )
    return [
        "",
        title,
        f"  rollout batch on meta ({batch}): {full}",
        textwrap.fill(grads, width=118, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False),
    ]


def _judge_text(j: dict[str, Any]) -> str:
    if j["kind"] == "gold":
        return j["detail"]
    where = "built in" if j["template_builtin"] else "file"
    return f"template {j['template']} ({where}, verdict key {j['answer_key']!r}); {j['detail']}"
