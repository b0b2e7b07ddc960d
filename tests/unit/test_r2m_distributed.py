"""R2M's online update on several processes: 2 CPU ranks (gloo), each holding part of the groups of one batch.

Checks that the head's replicas stay identical after every update and equal a single-process run of the same updates
on all groups; that a rank holding part of a group makes every rank fail with a clear error (none left waiting); that
without a process group the helpers run nothing; that the shipped accelerate configs parse.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import yaml

from r2m.config import Config
from r2m.distributed import (
    PartialGroupError,
    all_gather_rows,
    all_reduce_grads,
    check_whole_groups,
    is_distributed,
    rank,
    weighted_mean,
    world_size,
)
from r2m.models.r2m_head import R2MHeadConfig, R2MRewardHead
from r2m.rl.r2m import VARIANTS, R2MScorer, R2MUpdater
from tests.helpers.gloo import run_ranks

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is unavailable"
)

K, GROUPS, S, D_RM, D_P = 4, 4, 5, 8, 6  # group size, groups in the batch, feedback length, RM / policy widths
STEPS, FIRST = 3, 4  # policy steps t = FIRST, ... (omega(0) = 1: no gradient reaches the cross-attention at t = 0)
# (variant, r2m overrides, groups held by rank 0 / rank 1, head dtype); the first split is uneven to test the weighting
CASES = {
    "r2m": ("r2m", {"rm_updates_per_step": 2}, (1, 3), torch.float32),
    "r2m_float64": ("r2m", {"rm_updates_per_step": 2}, (1, 3), torch.float64),
    "replay_annotation": ("r2m", {"replay_weight": 0.5, "self_labels": "annotation"}, (2, 2), torch.float32),
    "iter_head": ("iter_head", {}, (3, 1), torch.float32),
}
# phi's bias: every R2M loss is invariant to a constant shift of the rewards (BT margins, z-scores), so its gradient is
# 0 up to rounding, which AdamW's normalisation turns into steps of up to rm_lr in float32 (harmless: nothing the head
# is trained or judged on depends on it); compared within that bound, and tightly in float64
SHIFT = "head.bias"
# float32: the ranks' weighted gradient mean rounds differently from the single-process sum, and AdamW's
# m / (sqrt(v) + 1e-8) amplifies that where a gradient is near 1e-8 (measured: one to_q entry of 64 off by 2e-6 on
# an AMD EPYC, 1.2e-5 on a Xeon): every entry but OUTLIERS per tensor within the tolerance, those within AdamW's step
# bound; float64 leaves no room for that (all entries within 1e-9)
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-9}
OUTLIERS = {torch.float32: 2, torch.float64: 0}
ROOT = Path(__file__).resolve().parents[2]


def batch(dtype: torch.dtype = torch.float32) -> dict:
    """One fixed rollout batch of GROUPS groups of K: RTE [B, D_rm], feedback [B, S, D_p], mask [B, S], prompts."""
    g = torch.Generator().manual_seed(7)
    b = GROUPS * K
    lengths = torch.randint(2, S + 1, (b,), generator=g)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    return {
        "rte": randn(b, D_RM),
        "h": randn(b, S, D_P),
        "mask": (torch.arange(S)[None] < lengths[:, None]).long(),
        "prompt_ids": [[1, 2, i // K + 3] for i in range(b)],  # the prompt tokens: one prompt per group
        "replay": {
            side: (randn(3, D_RM), randn(3, S, D_P), torch.ones(3, S).long()) for side in ("chosen", "rejected")
        },
    }


def updater(case: str, head_seed: int) -> R2MUpdater:
    """An R2M updater on a small head (``head_seed``: its initialisation) with the case's config."""
    variant, overrides, _, dtype = CASES[case]
    cfg = Config()
    cfg.rl.num_generations, cfg.rl.steps = K, 10
    cfg.r2m.rm_lr = 1e-2
    for key, value in overrides.items():
        setattr(cfg.r2m, key, value)
    v = VARIANTS[variant]
    torch.manual_seed(head_seed)
    hc = R2MHeadConfig(
        rm_dim=D_RM, policy_dim=D_P, attn_dim=D_RM, num_heads=2, use_attention=v.use_attention, total_steps=10
    )
    head = R2MRewardHead(hc, head=torch.nn.Linear(D_RM, 1)).to(dtype)
    scorer = R2MScorer(torch.nn.Identity(), head, v, max_length=16)  # the trunk is not used: RTE comes precomputed
    replay = None
    if cfg.r2m.replay_weight > 0:
        features = batch(dtype)["replay"]
        replay = SimpleNamespace(features=lambda: features)  # frozen features: the same on every rank
    return R2MUpdater(scorer, None, SimpleNamespace(last_batch=None), cfg, replay=replay)


def run_updates(upd: R2MUpdater, rows: slice) -> list[dict]:
    """STEPS updates on ``rows`` of the batch: after each, the head's state and the update's metrics."""
    head, out = upd.scorer.head, []
    data = batch(next(head.parameters()).dtype)
    for step in range(FIRST, FIRST + STEPS):
        rte, h, mask = data["rte"][rows], data["h"][rows], data["mask"][rows]
        if head.attn is None:
            h = mask = None
        with torch.no_grad():  # what the scorer computed for TRL at this step
            rewards = head(rte, h, mask, upd.scorer.omega_at(step))
        upd.scorer.cache = {"rte": rte, "h": h, "mask": mask, "step": step, "rewards": rewards}
        upd.reward_fn.last_batch = {"prompt_ids": data["prompt_ids"][rows]}
        metrics = upd.update()
        out.append({"state": {k: v.detach().clone() for k, v in head.state_dict().items()}, "metrics": metrics})
    return out


def split(case: str, r: int) -> slice:
    """Rank ``r``'s rows in ``case``: consecutive whole groups, as TRL hands them out."""
    groups = CASES[case][2]
    start = sum(groups[:r]) * K
    return slice(start, start + groups[r] * K)


def rank_work(r: int, shared: Path) -> dict:
    """One rank: every case's updates on its groups, then the partial-group cases."""
    result: dict = {"world": world_size(), "rank": rank(), "distributed": is_distributed()}
    for case in CASES:
        upd = updater(case, head_seed=100 + r)  # built differently on each rank: on_train_begin syncs them
        upd.on_train_begin(None, None, None)
        result[case] = run_updates(upd, split(case, r))
    gathered = all_gather_rows(torch.arange(3 * r + 2, dtype=torch.float32).view(-1, 1) + 10 * r)
    result["gathered"] = gathered
    # a partial group on rank 0 only (6 = 1.5 groups): every rank must raise
    result["partial"] = partial_case(slice(0, 6) if r == 0 else slice(8, 16))
    # whole-sized but misaligned on rank 1 (rows 2..9 straddle two prompts): every rank must raise
    result["misaligned"] = partial_case(slice(8, 16) if r == 0 else slice(2, 10))
    return result


def partial_case(rows: slice) -> str | None:
    """The error an update on ``rows`` raises (None: it ran)."""
    upd = updater("r2m", head_seed=0)
    try:
        run_updates(upd, rows)
    except PartialGroupError as e:
        return str(e)
    return None


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """The results of the 2 ranks (one spawn for every test of this module)."""
    return run_ranks(rank_work, tmp_path_factory.mktemp("r2m_dist"))


def single_process(case: str) -> list[dict]:
    torch.set_num_threads(1)
    return run_updates(updater(case, head_seed=100), slice(0, GROUPS * K))


@pytest.mark.parametrize("case", list(CASES))
def test_replicas_stay_identical_and_equal_the_single_process_run(ranks, case):
    assert [r["world"] for r in ranks] == [2, 2] and [r["rank"] for r in ranks] == [0, 1]
    assert all(r["distributed"] for r in ranks)
    one = single_process(case)
    upd = updater(case, head_seed=100)
    initial = upd.scorer.head.state_dict()
    fp64 = CASES[case][3] == torch.float64
    for step in range(STEPS):
        s0, s1, ref = ranks[0][case][step]["state"], ranks[1][case][step]["state"], one[step]["state"]
        assert s0.keys() == s1.keys() == ref.keys()
        for name in ref:
            assert torch.equal(s0[name], s1[name]), f"{case} step {step}: {name} differs between the ranks"
            diff = (s0[name] - ref[name]).abs()
            bound = 2 * upd.optimizer.defaults["lr"] * upd.updates * (step + 1)  # AdamW moves an entry <= lr a step
            if name == SHIFT and not fp64:
                assert float(diff.max()) <= bound, f"{case} {step}: {name}"
                continue
            dtype = CASES[case][3]
            off = diff > TOLERANCE[dtype] * (1 + ref[name].abs())
            assert int(off.sum()) <= OUTLIERS[dtype], f"{case} {step} {name}: {int(off.sum())} entries off"
            assert float(diff.max()) <= bound, f"{case} {step} {name}: {float(diff.max())} beyond AdamW's bound"
            if step == 0 and name != SHIFT:
                assert not torch.equal(ref[name], initial[name]), f"{case}: {name} was not updated"
        m0, m1, mref = ranks[0][case][step]["metrics"], ranks[1][case][step]["metrics"], one[step]["metrics"]
        for key in ("r2m_grebt", "r2m_bt", "r2m_gre", "r2m_replay_bt", "r2m_attention_norm", "r2m_attention_share"):
            if key in mref:
                assert m0[key] == m1[key], f"{case}: {key} differs between the ranks"
                assert m0[key] == pytest.approx(mref[key], rel=1e-5, abs=1e-6), f"{case} {step}: {key}"


def test_all_gather_rows_is_the_whole_batch_in_rank_order(ranks):
    """What GRE's batch std is taken over: the ranks' rows concatenated in rank order, uneven sizes included."""
    want = torch.cat([torch.arange(3 * r + 2, dtype=torch.float32).view(-1, 1) + 10 * r for r in range(2)])
    for res in ranks:
        assert torch.equal(res["gathered"], want)


@pytest.mark.parametrize("which", ["partial", "misaligned"])
def test_a_rank_holding_part_of_a_group_fails_on_every_rank(ranks, which):
    for res in ranks:
        assert res[which] is not None, f"rank {res['rank']} did not reject the {which} batch"
        assert "part of a group of K=4" in res[which] and "per_device_train_batch_size" in res[which]


def test_without_a_process_group_nothing_runs():
    assert not is_distributed() and world_size() == 1 and rank() == 0
    x = torch.randn(3)
    assert weighted_mean(x, 2.0) is x and all_gather_rows(x) is x
    p = torch.nn.Parameter(torch.randn(4))
    p.grad = torch.randn(4)
    g = p.grad
    all_reduce_grads([p], 1.0)
    assert p.grad is g
    check_whole_groups(3, K)  # a partial group: only the update's view(-1, K) would complain, as before


def test_single_process_update_is_unchanged_by_the_distributed_code():
    """The no-group path runs the same ops as before: the update equals a hand-written GREBT step bitwise."""
    from r2m.losses import grebt_terms

    upd, ref = updater("r2m", head_seed=3), updater("r2m", head_seed=3)
    data = batch()
    run_updates(upd, slice(0, GROUPS * K))
    head, opt = ref.scorer.head, ref.optimizer
    for step in range(FIRST, FIRST + STEPS):
        w = ref.scorer.omega_at(step)
        for _ in range(ref.updates):
            rewards = head(data["rte"], data["h"], data["mask"], w).view(-1, K)
            loss = grebt_terms(rewards, ref.alpha, std_floor=ref.gre_std_floor)["grebt"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.trainable_parameters(), ref.grad_clip)
            opt.step()
    for name, value in head.state_dict().items():
        assert torch.equal(value, upd.scorer.head.state_dict()[name]), name


ACCELERATE = {
    "ddp.yaml": "MULTI_GPU",
    "deepspeed_zero2.yaml": "DEEPSPEED",
    "deepspeed_zero3.yaml": "DEEPSPEED",
    "fsdp.yaml": "FSDP",
}


@pytest.mark.parametrize("name", list(ACCELERATE))
def test_accelerate_configs_parse(name):
    """Each config loads as accelerate launch loads it, and every nested key is a launch option it copies."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    path = ROOT / "configs" / "accelerate" / name
    cfg = load_config_from_file(str(path))  # an unknown top-level key is an error there
    assert cfg.compute_environment.value == "LOCAL_MACHINE"
    assert cfg.distributed_type.value == ACCELERATE[name]
    assert cfg.mixed_precision == "bf16" and cfg.num_processes == 8 and cfg.num_machines == 1
    options = {a.dest for a in launch_command_parser()._actions}
    raw = yaml.safe_load(path.read_text())
    for section in ("deepspeed_config", "fsdp_config"):
        assert set(raw.get(section) or {}) <= options, f"{name}: unknown {section} keys"
    if name.startswith("deepspeed"):
        assert raw["deepspeed_config"]["zero_stage"] == int(name[-6])
        assert raw["deepspeed_config"]["gradient_accumulation_steps"] == 1
    if name == "fsdp.yaml":
        assert raw["fsdp_config"]["fsdp_version"] == 2
