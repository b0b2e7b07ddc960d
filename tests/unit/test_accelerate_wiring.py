"""The RL stage's plumbing for ``accelerate launch`` (docs/scale-out.md): per-rank device, TRL's vLLM options, the
launch precision check, the resume fingerprint, the monitor's feedback without a capture (vLLM), and, on 2 gloo
processes, the main-process-only writes, the barriers and the ranks' metric means. In a plain process every new path
must change nothing: checked here where it can be, bitwise on real runs by tests/stages/test_rl_resume.py and
tests/flows/test_reproducibility.py; the 2-process launch itself is tests/stages/test_accelerate_launch.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from r2m.config import Config, ConfigError, load_config
from r2m.distributed import (
    ReplicaMismatchError,
    barrier,
    broadcast_object,
    check_same_on_all_ranks,
    collective_device,
    is_distributed,
    launched_world_size,
    state_digest,
    weighted_means,
)
from r2m.rl.policy_pass import PolicyMonitor, PolicyPass, sequence_states
from r2m.rl.runner import GUARD_KEYS, VLLM_ADDRESS_KEYS, VLLM_KEYS, check_mixed_precision, policy_device, trl_config
from tests.helpers.gloo import run_ranks

ROOT = Path(__file__).resolve().parents[2]
# the rl keys of the resume fingerprint before the vLLM keys existed: existing runs' run_config.json stays the same
RL_KEYS_BEFORE = {
    "algos",
    "methods",
    "steps",
    "rounds",
    "prompts_per_step",
    "num_generations",
    "max_completion_length",
    "temperature",
    "lr",
    "beta",
    "max_grad_norm",
    "bf16",
    "monitor_sample",
    "monitor_every",
}


# --- one process: nothing changes ------------------------------------------------------------------------------------


def test_without_a_process_group_the_helpers_run_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not is_distributed() and launched_world_size() == 1 and collective_device() == torch.device("cpu")
    barrier()
    box = {"a": 1}
    assert broadcast_object(box) is box
    assert weighted_means({"b": 2.0, "a": 1.0}, {"a": 5.0}) == {"b": 2.0, "a": 1.0}
    state = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.5, dtype=torch.float64)}
    assert check_same_on_all_ranks(state, "x") == state_digest(state)
    flipped = {**state, "w": torch.tensor([1.0, 2.0]).nextafter(torch.tensor(3.0))}  # one ulp in one entry
    assert state_digest(flipped) != state_digest(state)
    assert state_digest({"w": state["w"].to(torch.bfloat16)}) != state_digest({"w": state["w"]})
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert launched_world_size() == 4 and not is_distributed()


def test_policy_device_is_this_ranks_gpu_only_under_a_launch(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert policy_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert policy_device() == torch.device("cuda")  # unchanged: one process
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert policy_device() == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert policy_device() == torch.device("cpu")  # a CPU launch: gloo


def test_init_distributed_starts_nothing_in_a_plain_process(monkeypatch):
    from r2m.rl.runner import init_distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    init_distributed()
    assert not dist.is_initialized()


def test_trl_config_passes_the_vllm_options_through(tmp_path, monkeypatch):
    from trl import GRPOConfig, RLOOConfig

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    args = trl_config("grpo", Config(), tmp_path / "a")
    assert {k: getattr(args, k) for k in VLLM_KEYS} == {k: defaults[k] for k in VLLM_KEYS}  # TRL's own defaults
    cfg = Config()
    cfg.rl.vllm_mode, cfg.rl.vllm_server_host, cfg.rl.vllm_server_port = "server", "10.0.0.2", 8123
    cfg.rl.vllm_server_base_url, cfg.rl.vllm_gpu_memory_utilization = "http://h:1", 0.5
    cfg.rl.vllm_tensor_parallel_size, cfg.rl.vllm_enable_sleep_mode = 2, True
    for algo, cls in (("grpo", GRPOConfig), ("rloo", RLOOConfig)):
        args = trl_config(algo, cfg, tmp_path / algo)
        assert type(args) is cls and args.use_vllm is False
        assert (args.vllm_mode, args.vllm_server_host, args.vllm_server_port) == ("server", "10.0.0.2", 8123)
        assert (args.vllm_server_base_url, args.vllm_gpu_memory_utilization) == ("http://h:1", 0.5)
        assert (args.vllm_tensor_parallel_size, args.vllm_enable_sleep_mode) == (2, True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_use_vllm_without_a_gpu_is_a_config_error(tmp_path):
    cfg = Config()
    cfg.rl.use_vllm = True
    with pytest.raises(ConfigError, match="rl.use_vllm: vLLM generation needs a CUDA device"):
        trl_config("grpo", cfg, tmp_path)


def test_the_launch_precision_must_be_what_rl_bf16_says(monkeypatch, tmp_path):
    cfg = Config()
    for value in (None, "no", "NO"):
        if value is None:
            monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
        else:
            monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", value)
        check_mixed_precision(cfg)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(ConfigError, match=r"mixed_precision bf16 .* but rl.bf16 is false: pass --set rl.bf16=true"):
        check_mixed_precision(cfg)
    with pytest.raises(ConfigError, match="rl.bf16 is false"):
        trl_config("grpo", cfg, tmp_path)  # before TRL sees it
    cfg.rl.bf16 = True
    check_mixed_precision(cfg)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(ConfigError, match="supports bf16 only"):
        check_mixed_precision(cfg)


def test_vllm_keys_are_validated():
    for override, message in (
        ("rl.vllm_mode=remote", "rl.vllm_mode must be one of colocate, server"),
        ("rl.vllm_server_port=0", "rl.vllm_server_port"),
        ("rl.vllm_gpu_memory_utilization=1.5", "rl.vllm_gpu_memory_utilization"),
        ("rl.vllm_tensor_parallel_size=0", "rl.vllm_tensor_parallel_size"),
        ("rl.vllm_server_base_url=host:8000", "rl.vllm_server_base_url"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(ROOT / "params.yaml", overrides=[override])
    cfg = load_config(ROOT / "params.yaml", overrides=["rl.use_vllm=true", "rl.vllm_server_host=127.0.0.1"])
    assert cfg.rl.use_vllm is True and cfg.rl.vllm_server_host == "127.0.0.1"


def test_the_fingerprint_gains_vllm_and_world_size_only_when_they_change_what_runs(monkeypatch):
    import r2m.rl.assembly as assembly
    from tasks import stages

    cfg = load_config(ROOT / "params.yaml", profile="ci")
    fp = assembly.run_fingerprint(cfg, "grpo", "r2m", "digest", 64)
    assert set(fp) == {"algo", "method", "seed", "rl", "r2m", "policy", "inputs", "n_prompts"}
    assert set(fp["rl"]) == RL_KEYS_BEFORE
    view = stages.stage_config(cfg, stages.get("rl"))  # what the stage sees: its declared rl keys
    declared = {p.split(".", 1)[1] for p in stages.get("rl").params if p.startswith("rl.")}
    rl_keys = set(assembly.run_fingerprint(view, "grpo", "r2m", "digest", 64)["rl"])
    assert rl_keys == declared - set(VLLM_KEYS) - set(GUARD_KEYS)  # the fault guard's bounds change no healthy run
    assert "vllm" not in json.dumps(assembly.run_fingerprint(view, "grpo", "r2m", "digest", 64))

    on = load_config(ROOT / "params.yaml", profile="ci", overrides=["rl.use_vllm=true", "rl.vllm_mode=server"])
    vllm = assembly.run_fingerprint(on, "grpo", "r2m", "digest", 64)["vllm"]
    assert set(vllm) == set(VLLM_KEYS) - set(VLLM_ADDRESS_KEYS) and vllm["vllm_mode"] == "server"
    monkeypatch.setattr(assembly, "world_size", lambda: 2)
    assert assembly.run_fingerprint(cfg, "grpo", "r2m", "digest", 64)["world_size"] == 2


def test_the_rl_stage_view_reads_the_vllm_keys():
    from tasks import stages

    stage = stages.get("rl")
    cfg = load_config(ROOT / "params.yaml", profile="ci")
    assert stages.stage_config(cfg, stage).rl.use_vllm is False
    cfg.rl.use_vllm = True
    assert stages.stage_config(cfg, stage).rl.use_vllm is True  # declared by the stage: a setting always reaches it


def test_a_plain_process_exports_the_policy_as_before(tmp_path):
    from r2m.rl.callbacks import export_policy

    calls = []
    model = SimpleNamespace(save_pretrained=lambda out, **kw: calls.append(("model", out, kw)))
    tok = SimpleNamespace(save_pretrained=lambda out, **kw: calls.append(("tok", out, kw)))
    sharded = SimpleNamespace(is_deepspeed_enabled=True, is_fsdp_enabled=False)  # no process group: no gather
    export_policy(model, tok, tmp_path / "p", sharded)
    assert calls == [("model", tmp_path / "p", {"safe_serialization": True}), ("tok", tmp_path / "p", {})]


# --- the monitor without a capture (vLLM rollouts) ------------------------------------------------------------------


def test_the_capture_takes_a_batch_of_prompts_of_one_length(lm):
    """generate() runs the backbone without a mask when nothing is padded (e.g. rl.prompts_per_step 1)."""
    from tests.unit.test_r2m_rl import PROMPTS, generate

    tok, policy, reference = lm
    monitor = PolicyMonitor(tok, reference, keep_feedback=True, k=4)
    monitor.attach(policy)
    ids = generate(policy, tok, [PROMPTS[0]] * 4, max_new_tokens=6)
    ppass = monitor.rollout(ids)
    states, mask = sequence_states(policy, ppass.prompt_ids, ids, tok.pad_token_id)
    assert torch.equal(ppass.mask.cpu(), mask.cpu())
    real = mask.bool()[..., None]
    assert torch.allclose(ppass.feedback * real, states * real, atol=1e-5)
    assert ppass.feedback_forward_s is None  # captured: no forward of its own


def test_recomputed_feedback_equals_the_captured_one(lm):
    from tests.unit.test_r2m_rl import PROMPTS, generate

    tok, policy, reference = lm
    captured = PolicyMonitor(tok, reference, keep_feedback=True, monitor_sample=0, k=4)
    captured.attach(policy)
    ids = generate(policy, tok, PROMPTS, max_new_tokens=8, seed=3)
    want = captured.rollout(ids)
    vllm = PolicyMonitor(tok, reference, keep_feedback=True, monitor_sample=0, k=4, recompute_feedback=True)
    vllm.attach(policy, capture=False)
    got = vllm.rollout(ids, prompts=PROMPTS)
    assert got.prompt_ids == want.prompt_ids and got.rows == want.rows
    assert torch.equal(got.mask.cpu(), want.mask.cpu())
    real = got.mask.bool()[..., None]
    assert torch.allclose(got.feedback * real, want.feedback * real, atol=1e-5)
    assert torch.allclose(got.kl, want.kl, atol=1e-4)
    assert got.feedback_forward_s is not None and got.feedback_forward_s > 0
    with pytest.raises(ValueError, match="needs the batch's prompts"):
        vllm.rollout(ids)


def test_without_kept_feedback_the_recompute_covers_the_monitored_rows_only(lm):
    from tests.unit.test_r2m_rl import PROMPTS, generate

    tok, policy, reference = lm
    ids = generate(policy, tok, PROMPTS, seed=4)
    full = PolicyMonitor(tok, reference, keep_feedback=True, monitor_sample=0, k=4, recompute_feedback=True)
    full.attach(policy, capture=False)
    want = full.rollout(ids, prompts=PROMPTS).kl
    sampled = PolicyMonitor(tok, reference, monitor_sample=2, k=4, monitor_every=2, recompute_feedback=True)
    sampled.attach(policy, capture=False)
    ppass = sampled.rollout(ids, step=0, prompts=PROMPTS)
    assert ppass.rows == [0, 4] and ppass.feedback is None
    assert torch.allclose(ppass.kl[[0, 4]], want[[0, 4]], atol=1e-5)
    assert torch.isnan(ppass.kl[[1, 2, 3, 5, 6, 7]]).all()
    skipped = sampled.rollout(ids, step=1, prompts=PROMPTS)  # a step the monitor skips: no forward at all
    assert skipped.rows == [] and skipped.feedback_forward_s is None and torch.isnan(skipped.kl).all()


# --- 2 gloo processes -------------------------------------------------------------------------------------------


class _Monitor:
    """Rank r's rollout: KL on rows ``rows`` (values 1, 2, ...), NaN elsewhere."""

    recompute_feedback = False

    def __init__(self, rows: list[int]) -> None:
        self.rows = rows

    def rollout(self, completion_ids, step=0):
        n = len(completion_ids)
        kl = torch.full((n,), float("nan"))
        kl[self.rows] = torch.arange(1.0, len(self.rows) + 1) * (1 + 10 * dist.get_rank())
        return PolicyPass(kl=kl, feedback=None, mask=torch.ones(n, 1), prompt_ids=[[0]] * n, rows=self.rows)


def rank_work(r: int, shared: Path) -> dict:
    """What each rank checks; returns its observations."""
    from r2m.rl.callbacks import MetricsRecorder, ProgressBar, RoundExporter
    from r2m.rl.reward import RewardFunction
    from r2m.rl.runner import RunSpec, prepare_run_dir, publish_run

    out: dict = {}
    # per-key weighted means; rank 1 has a key rank 0 lacks and vice versa
    values = [{"a": 1.0, "b": 2.0}, {"a": 3.0, "c": 5.0}][r]
    weights = [{"a": 1.0, "b": 3.0}, {"a": 3.0, "c": 1.0}][r]
    out["means"] = weighted_means(values, weights)
    out["broadcast"] = broadcast_object(("from rank 0", None) if r == 0 else "ignored")
    out["same"] = check_same_on_all_ranks({"w": torch.ones(3)}, "the weights")
    try:
        check_same_on_all_ranks({"w": torch.ones(3) * (1 + r)}, "the weights")
    except ReplicaMismatchError as e:
        out["mismatch"] = str(e)

    # the run directory: checked, written and published (the old one moved aside) by rank 0 alone; every rank gets
    # its answer
    spec = RunSpec("grpo", "r2m", shared / "runs" / "grpo-r2m", shared, [], {"new": 1})
    out["prepared"] = prepare_run_dir(spec)
    work = out["prepared"][0]
    recorder = MetricsRecorder(work, shared / "timings.jsonl", extras=[lambda: {"r2m_x": float(r)}])
    for step in (1, 2):
        recorder.on_log(None, SimpleNamespace(global_step=step), None, logs={"loss": 0.5, "train_reward": 1.0})
    barrier()
    out["metrics"] = (work / "metrics.jsonl").read_text()

    saves: list[str] = []
    model = SimpleNamespace(save_pretrained=lambda d, **kw: (saves.append("model"), Path(d).mkdir(parents=True)))
    tok = SimpleNamespace(save_pretrained=lambda d, **kw: saves.append("tok"))
    extra_calls: list[int] = []
    exporter = RoundExporter(work, 2, tok, extra_export=lambda d: extra_calls.append(r))
    exporter.on_save(None, SimpleNamespace(global_step=2), None, model=model)
    out["saves"], out["extra_calls"] = saves, extra_calls
    out["round"] = json.loads((work / "round_1" / "round.json").read_text())  # visible after the barrier
    barrier()
    if r == 0:
        publish_run(spec, work)
    barrier()

    bar = ProgressBar("x")
    bar.on_train_begin(None, SimpleNamespace(max_steps=2, global_step=0), None)
    out["bar"] = bar.bar is not None
    bar.on_train_end(None, None, None)

    # the reward function: rank 0 holds 2 rows (KL on row 0), rank 1 holds 4 (KL on rows 0 and 2)
    logged: dict = {}
    rows = [[0], [0, 2]][r]
    n = 2 * (r + 1)
    fn = RewardFunction(lambda t, p, s, **kw: torch.full((len(t),), float(r)), _Monitor(rows), num_generations=2)
    fn(["p"] * n, ["x"] * n, completion_ids=[[1]] * n, log_metric=lambda k, v: logged.__setitem__(k, v))
    out["logged"] = logged
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    shared = tmp_path_factory.mktemp("wiring")
    stale = shared / "runs" / "grpo-r2m"  # left by a run with another fingerprint: moved aside once
    stale.mkdir(parents=True)
    (stale / "run_config.json").write_text(json.dumps({"old": 1}))
    return [{**res, "shared": shared} for res in run_ranks(rank_work, shared)]


def test_weighted_means_over_the_union_of_the_ranks_keys(ranks):
    for res in ranks:
        assert res["means"] == pytest.approx({"a": (1 * 1 + 3 * 3) / 4, "b": 2.0, "c": 5.0})
    assert list(ranks[0]["means"]) == ["a", "b", "c"] and list(ranks[1]["means"]) == ["a", "c", "b"]


def test_broadcast_and_replica_checks(ranks):
    assert [res["broadcast"] for res in ranks] == [("from rank 0", None)] * 2
    assert ranks[0]["same"] == ranks[1]["same"] == state_digest({"w": torch.ones(3)})
    for res in ranks:  # both ranks raise, neither is left waiting
        assert "the weights differs between the ranks" in res["mismatch"]


def test_the_run_directory_is_prepared_and_written_by_rank_0_only(ranks):
    shared = ranks[0]["shared"]
    pending = shared / "runs.pending" / "grpo-r2m"  # the old run stays until the new one is published
    assert [res["prepared"] for res in ranks] == [(pending, None, False)] * 2
    assert not pending.exists()
    assert len(list((shared / "runs.stale").iterdir())) == 1  # moved aside once
    assert json.loads((shared / "runs" / "grpo-r2m" / "run_config.json").read_text()) == {"new": 1}
    for res in ranks:  # one row per step, rank 0's
        assert [json.loads(x) for x in res["metrics"].splitlines()] == [
            {"step": 1, "loss": 0.5, "train_reward": 1.0, "r2m_x": 0.0},
            {"step": 2, "loss": 0.5, "train_reward": 1.0, "r2m_x": 0.0},
        ]
    assert len((shared / "timings.jsonl").read_text().splitlines()) == 2


def test_round_exports_save_once_and_call_the_extra_export_everywhere(ranks):
    assert ranks[0]["saves"] == ["model", "tok"] and ranks[1]["saves"] == []
    assert ranks[0]["extra_calls"] == [0] and ranks[1]["extra_calls"] == [1]  # its forwards run on every rank
    assert all(res["round"] == {"round": 1, "step": 2} for res in ranks)
    assert [res["bar"] for res in ranks] == [True, False]


def test_the_reward_functions_metrics_are_the_whole_batchs(ranks):
    # train_reward: rank 0's 2 rows score 0, rank 1's 4 rows score 1; kl: rows 1 (rank 0), 11 and 22 (rank 1)
    for res in ranks:
        assert res["logged"]["train_reward"] == pytest.approx(4 / 6)
        assert res["logged"]["kl_to_ref"] == pytest.approx((1 + 11 + 22) / 3)
        assert res["logged"]["train_group_std"] == pytest.approx(0.0)
    assert ranks[0]["logged"] == ranks[1]["logged"]
