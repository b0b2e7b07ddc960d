"""One RL run assembled from a working directory's files: the reward scorer of the method (from its entry in the
methods registry, :mod:`r2m.rl.methods`), the reward callable, the run spec with its resume fingerprint
(:func:`build_run`)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from r2m.config import Config, ConfigError
from r2m.data.gold import GoldJudge
from r2m.data.io import PAIR_SCHEMA, read_json, read_jsonl, write_json
from r2m.data.preferences import make_preference_pairs
from r2m.distributed import broadcast_params, check_same_on_all_ranks, is_distributed, is_main_process, world_size
from r2m.evaluation.accuracy import pairs_digest, reward_accuracy_report
from r2m.judges.gold import load_gold
from r2m.models.r2m_head import EXTRA as HEAD_EXTRA
from r2m.models.r2m_head import OPTIMIZER as HEAD_OPTIMIZER
from r2m.models.r2m_head import WEIGHTS as HEAD_WEIGHTS
from r2m.models.reward_model import RewardModel
from r2m.paths import Paths
from r2m.prompts import log_truncated, render_prompts, render_prompts_counted
from r2m.rl.methods import METHODS, Method
from r2m.rl.numerics import FaultLog
from r2m.rl.peers import EnsembleScorer, PARScorer, PenalisedScorer, Penalty
from r2m.rl.policy_pass import PolicyMonitor
from r2m.rl.r2m import R2MScorer, R2MUpdater, ReplayPairs, build_head, score_with_feedback
from r2m.rl.reward import FrozenRMs, RewardFunction, VanillaScorer
from r2m.rl.runner import (
    GUARD_KEYS,
    VLLM_ADDRESS_KEYS,
    VLLM_KEYS,
    RunSpec,
    init_distributed,
    policy_device,
    uses_vllm,
)
from r2m.rm_train import train_reward_model

log = logging.getLogger(__name__)


def files_digest(*dirs: Path) -> str:
    """Hash of the safetensors/json files of model dirs: the run's inputs, for the resume fingerprint."""
    h = hashlib.sha256()
    for d in dirs:
        for f in sorted(Path(d).rglob("*")):
            if f.suffix in {".safetensors", ".json"} and f.is_file():
                h.update(f.relative_to(d).as_posix().encode())
                h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def method_inputs_digest(paths: Paths, method: Method) -> str:
    """Hash of the optional stages' files a method reads (the ensemble's RMs, PAR's reference scores)."""
    h = hashlib.sha256()
    if "reward_ensemble" in method.needs:
        h.update(files_digest(paths.models / "rm_ensemble").encode())
    if "par_reference" in method.needs:
        h.update(hashlib.sha256((paths.models / "par_reference.jsonl").read_bytes()).digest())
    return h.hexdigest()[:16]


def gold_labelled_pairs(posts: list, seed: int) -> list[dict]:
    """Preference pairs for the RL prompts' posts with the gold ordering as the label (``pretrained_rm``)."""
    rows = make_preference_pairs(posts, seed=seed, judge=GoldJudge())
    return [r if r["label_agrees_with_gold"] else {**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows]


def round_accuracy(rm, head, monitor, cfg: Config, pairs: list[dict], tok) -> dict:
    """RM-test accuracy of the R2M reward with the current policy's feedback at t = T (strict), on all RM-test
    pairs (the set the evaluate stage scores). Heads with cross-attention add ``attention_only``: the same report
    for the cross-attention's part of the reward alone, ``(1 - omega) w . CA`` (how well the feedback's part ranks
    the pairs on its own), and ``attention_norm``: the mean norm of ``(1 - omega) CA`` over the responses."""
    prompts = [r["prompt"] for r in pairs]
    policy_prompts = render_prompts(tok, prompts, cfg.policy)
    scored = {}
    for side in ("chosen", "rejected"):
        parts: list[dict] = []
        reward = score_with_feedback(
            rm,
            head,
            monitor,
            prompts,
            policy_prompts,
            [r[side] for r in pairs],
            max_length=cfg.reward_model.max_length,
            seed=cfg.seed,
            parts=parts,
        )
        scored[side] = (reward, parts)
    out = reward_accuracy_report(scored["chosen"][0], scored["rejected"][0])
    if head.attn is not None:
        chosen, rejected = ([p["attention"] for p in scored[s][1]] for s in ("chosen", "rejected"))
        out["attention_only"] = reward_accuracy_report(chosen, rejected)
        norms = [p["attention_norm"] for s in ("chosen", "rejected") for p in scored[s][1]]
        out["attention_norm"] = sum(norms) / len(norms)
    return out


def penalties(cfg: Config, method: Method) -> list[tuple[str, Penalty, float]]:
    """TRL's penalty rewards a method adds, as ``(name, fn(completion_ids), weight)``."""
    from trl.rewards import get_repetition_penalty_reward, get_soft_overlong_punishment

    out = []
    if "length" in method.penalties:
        lp = cfg.methods.length_penalty
        out.append(("length", get_soft_overlong_punishment(cfg.rl.max_completion_length, lp.cache), lp.weight))
    if "repetition" in method.penalties:
        rp = cfg.methods.repetition_penalty
        out.append(("repetition", get_repetition_penalty_reward(rp.ngram, rp.max_penalty), 1.0))
    return out


def ensemble_members(paths: Paths, device) -> tuple[list[RewardModel], list[tuple[float, float]]]:
    """The ensemble's reward models (``models/rm_ensemble/member_<i>``) and their normalisation stats."""
    d = paths.models / "rm_ensemble"
    stats = read_json(d / "normalisation.json")["members"]
    members = [RewardModel.load(d / f"member_{i}").to(device) for i in range(len(stats))]
    return members, [(s["mean"], s["std"]) for s in stats]


def par_centres(paths: Paths) -> dict[str, float]:
    """PAR's r_ref per RL prompt (the ``par_reference`` stage's file), keyed by the RM prompt."""
    rows = read_jsonl(paths.models / "par_reference.jsonl", {"id": str, "prompt": str, "ref_score": float})
    return {r["prompt"]: r["ref_score"] for r in rows}


def build_scorer(method: str, rm: RewardModel, cfg: Config, paths: Paths, monitor: PolicyMonitor, tok):
    """(scorer, extra_export, R2M head or None) for a method, from its registry entry (:data:`METHODS`)."""
    m, ml = METHODS[method], cfg.reward_model.max_length
    export, head = None, None
    if m.reward == "r2m":
        trunk, policy = (d.relative_to(paths.root).as_posix() for d in (paths.rm, paths.sft))  # not machine paths
        head = build_head(rm, monitor.reference.config.hidden_size, cfg, m.variant, trunk, policy)
        head = head.to(policy_device())
        scorer = R2MScorer(rm, head, m.variant, ml, seed=cfg.seed)
        test_pairs = read_jsonl(paths.data / "rm_test.jsonl", PAIR_SCHEMA)

        def export(d: Path) -> None:
            """The head and its RM-test accuracy into ``d``. Called on every rank: the accuracy's policy forwards
            run everywhere (ZeRO-3 / FSDP gather the policy's weights collectively), the main process writes."""
            if is_distributed():  # the replicas must be bitwise identical; the main process writes its own
                digest = check_same_on_all_ranks(head.state_dict(), "the R2M head")
                if is_main_process():
                    export = d.name.strip(".").removesuffix(".tmp")  # round_<k> or final (staged in .<name>.tmp)
                    log.info("R2M head sha256 %s: identical on all %d ranks (%s)", digest, world_size(), export)
            if is_main_process():
                head.save(d / "reward_head")
            accuracy = round_accuracy(rm, head, monitor, cfg, test_pairs, tok)
            accuracy["pairs"] = pairs_digest(test_pairs)  # the evaluate stage reuses it for the same pairs
            if is_main_process():
                write_json(d / "rm_accuracy.json", accuracy)

    elif m.reward == "par":
        scorer = PARScorer(rm, par_centres(paths), ml)
    elif m.reward == "ensemble":
        members, stats = ensemble_members(paths, policy_device())
        for member in members:
            member.share_trunk_with(rm)  # frozen-trunk profiles (smol): one trunk in memory, not k + 1
        scorer = EnsembleScorer(members, stats, m.combine, cfg.methods.ensemble.uwo_lambda, ml)
    elif m.reward == "warm":
        scorer = VanillaScorer(RewardModel.load(paths.models / "rm_ensemble" / "warm").to(policy_device()), ml)
    elif m.updates == "before":  # pretrained_rm
        posts, _ = load_gold(paths)
        if posts is None:
            raise ValueError(f"{method} needs gold labels for the RL prompts (the embedded task's posts.jsonl)")
        ids = [r["post_id"] for r in read_jsonl(paths.data / "rl_prompts.jsonl")]
        train_reward_model(rm, gold_labelled_pairs([posts[i] for i in ids], cfg.seed + 7), cfg.reward_model, cfg.seed)
        broadcast_params(rm.parameters())  # several processes: every rank scores with rank 0's RM (no-op on one)
        scorer = VanillaScorer(rm, max_length=ml)

        def export(d: Path) -> None:
            if is_main_process():
                rm.save(d / "reward_model")
    else:
        scorer = VanillaScorer(rm, max_length=ml)
    if m.penalties:
        scorer = PenalisedScorer(scorer, penalties(cfg, m))
    return scorer, export, head


def run_fingerprint(cfg: Config, algo: str, method: str, inputs: str, n_prompts: int) -> dict:
    """The resume fingerprint of a run (``run_config.json``; a run resumes only into a directory with the same one),
    without the digest of the optional stages' files (:func:`method_inputs_digest`), which :func:`build_run` adds.

    ``inputs``: :func:`files_digest` of the SFT policy and the RMs. The vLLM keys and the world size enter only where
    they change what runs (``rl.use_vllm`` on; more than one process), so every other run's fingerprint is what it
    was before they existed.
    """
    d = cfg.to_dict()
    fingerprint = {
        "algo": algo,
        "method": method,
        "seed": cfg.seed,
        "rl": {k: v for k, v in d["rl"].items() if k not in VLLM_KEYS and k not in GUARD_KEYS},
        "r2m": d["r2m"],
        "policy": d["policy"],
        "inputs": inputs,
        "n_prompts": n_prompts,
    }
    if uses_vllm(cfg):  # another sampler: the rollouts differ (where the server is does not matter)
        fingerprint["vllm"] = {k: getattr(cfg.rl, k) for k in VLLM_KEYS if k not in VLLM_ADDRESS_KEYS}
    if world_size() > 1:  # rl.prompts_per_step is per process: the world size sets the global batch
        fingerprint["world_size"] = world_size()
    m = METHODS[method]
    if m.params not in (None, "r2m"):  # a peer's parameters
        fingerprint["method_params"] = d["methods"][m.params]
    return fingerprint


def build_run(cfg: Config, paths: Paths, algo: str, method: str) -> tuple[RunSpec, RewardFunction, object]:
    """Everything :func:`r2m.rl.runner.train_rounds` needs for one run: the spec (with its resume fingerprint), the
    reward callable (scorer + policy monitor + gold judge) and the tokenizer. R2M variants add their updater
    callback."""
    run = f"{algo}-{method}"
    if METHODS[method].run_of:  # a config error: one line from the CLI, no traceback
        raise ConfigError(
            f"method {method!r} has no RL run of its own: it reads {METHODS[method].run_of!r}'s run "
            f"(r2m stage rl --method {METHODS[method].run_of})"
        )
    init_distributed()  # under accelerate launch: the process group first, so each rank builds on its own device
    prompts = read_jsonl(paths.data / "rl_prompts.jsonl", {"id": str, "prompt": str}, stage_input=True)
    tok = AutoTokenizer.from_pretrained(paths.sft)
    rendered, truncated = render_prompts_counted(tok, [r["prompt"] for r in prompts], cfg.policy)
    log_truncated(truncated, len(prompts), "rl_prompts.jsonl")
    prompts = [{**r, "policy_prompt": p} for r, p in zip(prompts, rendered, strict=True)]
    device = policy_device()
    reference = AutoModelForCausalLM.from_pretrained(paths.sft, use_safetensors=True).to(device)
    rm = RewardModel.load(paths.rm).to(device)
    _, gold_fn = load_gold(paths)
    monitor = PolicyMonitor(
        tok,
        reference,
        keep_feedback=METHODS[method].uses_feedback,
        monitor_sample=cfg.rl.monitor_sample,
        k=cfg.rl.num_generations,
        monitor_every=cfg.rl.monitor_every,
        last_step=cfg.rl.steps - 1,
        recompute_feedback=uses_vllm(cfg),
    )
    scorer, export, head = build_scorer(method, rm, cfg, paths, monitor, tok)
    # the proxy is the vanilla RM as the reward_model stage left it (pretrained_rm trains its own copy further)
    proxy = RewardModel.load(paths.rm).to(device) if METHODS[method].updates == "before" else rm
    heldout = RewardModel.load(paths.rm_heldout).to(device) if paths.rm_heldout.exists() else None
    if heldout is not None:
        heldout.share_trunk_with(proxy)  # a frozen trunk with two heads (smol): embedded once per batch
    frozen = FrozenRMs(proxy, heldout, max_length=cfg.reward_model.max_length)
    faults = FaultLog(cfg.rl.max_nonfinite_steps, cfg.rl.max_reward_scale)
    reward_fn = RewardFunction(scorer, monitor, cfg.rl.num_generations, gold=gold_fn, frozen=frozen, faults=faults)
    inputs = files_digest(paths.sft, paths.rm, *([paths.rm_heldout] if heldout is not None else []))
    fingerprint = run_fingerprint(cfg, algo, method, inputs, len(prompts))
    m = METHODS[method]
    if m.needs:
        fingerprint["method_inputs"] = method_inputs_digest(paths, m)
    spec = RunSpec(
        algo,
        method,
        paths.rl_run(run),
        paths.sft,
        prompts,
        fingerprint,
        extra_export=export,
        timings_file=paths.timings / "rl" / f"{run}.steps.jsonl",
        beta=cfg.methods.kl.beta if METHODS[method].kl else None,
        prompts_truncated=truncated,
    )
    if head is not None:
        replay = None
        if cfg.r2m.replay_weight > 0 and METHODS[method].updates == "online":
            pairs = read_jsonl(paths.data / "rm_train.jsonl", PAIR_SCHEMA)
            render = lambda ps: render_prompts(tok, ps, cfg.policy)  # noqa: E731
            replay = ReplayPairs(pairs, rm, monitor, render, cfg.r2m.replay_pairs, cfg)
        updater = R2MUpdater(scorer, monitor, reward_fn, cfg, replay=replay)
        spec.callbacks.append(updater)
        spec.on_resume = updater.resume
        spec.checkpoint_files = (HEAD_WEIGHTS, HEAD_OPTIMIZER, HEAD_EXTRA)
        spec.extra_metrics.append(lambda: updater.metrics)
    return spec, reward_fn, tok
