"""Stage smoke tests on the `ci` profile (tiny budgets): real stage functions, real files, real training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from r2m.data.io import PAIR_SCHEMA, DataValidationError, read_jsonl
from r2m.models.reward_model import RewardModel
from r2m.paths import Paths
from tasks.common import run_stage
from tests.conftest import make_workdir


def test_prepare_is_deterministic_and_valid(tiny_pipeline, ci_cfg, tmp_path):
    wd = make_workdir(tmp_path / "again")
    run_stage("prepare", ci_cfg, wd, mlflow=False)
    for name in ("posts", "sft", "rm_prompts", "rl_prompts", "eval_prompts"):
        a = (tiny_pipeline / "data" / f"{name}.jsonl").read_bytes()
        assert a == (wd / "data" / f"{name}.jsonl").read_bytes(), name
    rm_prompts = read_jsonl(tiny_pipeline / "data" / "rm_prompts.jsonl")
    d = ci_cfg.data
    assert [sum(r["split"] == s for r in rm_prompts) for s in ("rm_train", "rm_heldout", "rm_test")] == [
        d.n_rm_train,
        d.n_rm_heldout,
        d.n_rm_test,
    ]
    split_ids = [
        {r["id"] for r in read_jsonl(tiny_pipeline / "data" / f"{n}.jsonl")}
        for n in ("sft", "rm_prompts", "rl_prompts", "eval_prompts")
    ]
    assert all(not (a & b) for i, a in enumerate(split_ids) for b in split_ids[i + 1 :])  # disjoint splits


def test_preferences_are_policy_samples_labelled_by_gold(tiny_pipeline, ci_cfg):
    from r2m.judges.gold import load_gold

    _, gold_fn = load_gold(Paths.of(ci_cfg, tiny_pipeline))
    m = json.loads((tiny_pipeline / "metrics" / "preferences.json").read_text())
    for split, n in (("rm_train", ci_cfg.data.n_rm_train), ("rm_test", ci_cfg.data.n_rm_test)):
        pairs = read_jsonl(tiny_pipeline / "data" / f"{split}.jsonl", PAIR_SCHEMA)
        assert len(pairs) + m[split]["ties_dropped"] == n
        assert all(p["chosen_kind"] == "policy" and p["chosen"] != p["rejected"] for p in pairs)
        # the stored margin is gold's own verdict on the texts
        g_c = gold_fn([p["post_id"] for p in pairs], [p["chosen"] for p in pairs])
        g_r = gold_fn([p["post_id"] for p in pairs], [p["rejected"] for p in pairs])
        assert [round(c - r, 9) for c, r in zip(g_c, g_r, strict=True)] == [round(p["gold_margin"], 9) for p in pairs]
    assert m["rm_test"]["label_agreement"] == 1.0  # test labels are never flipped
    train_ids = {p["post_id"] for p in read_jsonl(tiny_pipeline / "data" / "rm_train.jsonl")}
    held_ids = {p["post_id"] for p in read_jsonl(tiny_pipeline / "data" / "rm_heldout.jsonl")}
    assert train_ids and held_ids and not train_ids & held_ids  # the held-out RM sees other pairs


def test_sft_trained_the_policy(tiny_pipeline):
    m = json.loads((tiny_pipeline / "metrics" / "sft.json").read_text())
    assert m["loss_final"] < m["loss_first"] - 1.0
    model = AutoModelForCausalLM.from_pretrained(tiny_pipeline / "models" / "sft", use_safetensors=True)
    assert sum(p.numel() for p in model.parameters()) == m["params"]
    gens = read_jsonl(tiny_pipeline / "models" / "sft" / "eval_generations.jsonl")
    assert len(gens) == 12 and "gold_mean" in m


def test_reward_model_saved_and_scores(tiny_pipeline):
    m = json.loads((tiny_pipeline / "metrics" / "reward_model.json").read_text())
    assert 0.0 <= m["test_accuracy"] <= 1.0 and 0 < m["n_train"] <= 80
    assert 0.0 <= m["heldout_rm"]["test_accuracy"] <= 1.0 and 0 < m["heldout_rm"]["n_train"] <= 40
    rm = RewardModel.load(tiny_pipeline / "models" / "rm")
    held = load_file(tiny_pipeline / "models" / "rm_heldout" / "head.safetensors")
    assert any(
        not torch.equal(v, load_file(tiny_pipeline / "models" / "rm" / "head.safetensors")[k]) for k, v in held.items()
    )
    s = rm.score_texts(["a post TL;DR: short", "a post TL;DR: a different summary"])
    assert s.shape == (2,) and torch.isfinite(s).all() and s[0] != s[1]
    # the trunk was trained (train_trunk: true) -> differs from the SFT trunk it started from
    sft = load_file(tiny_pipeline / "models" / "sft" / "model.safetensors")
    rm_trunk = load_file(tiny_pipeline / "models" / "rm" / "trunk" / "model.safetensors")
    key = next(k for k in rm_trunk if k.endswith("attention.query_key_value.weight"))
    assert not torch.allclose(rm_trunk[key], sft[f"gpt_neox.{key}"])


def test_bad_pair_file_names_file_row_field_and_keeps_outputs(tiny_pipeline, ci_cfg, tmp_path):
    import shutil

    wd = tmp_path / "bad"
    shutil.copytree(tiny_pipeline, wd)
    before = (wd / "models" / "rm" / "head.safetensors").read_bytes()
    lines = (wd / "data" / "rm_train.jsonl").read_text().splitlines()
    row = json.loads(lines[4])
    del row["rejected"]
    lines[4] = json.dumps(row)
    (wd / "data" / "rm_train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match=r"rm_train.jsonl: row 5: field 'rejected': missing"):
        run_stage("reward_model", ci_cfg, wd, mlflow=False)
    assert (wd / "models" / "rm" / "head.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    ("algo", "method"),
    [("grpo", "vanilla"), ("rloo", "vanilla"), ("grpo", "r2m"), ("rloo", "iter_head"), ("grpo", "pretrained_rm")],
)
def test_rl_then_evaluate(tiny_pipeline, ci_cfg, algo, method, monkeypatch):
    out = run_stage("rl", ci_cfg, tiny_pipeline, mlflow=False, run=f"{algo}-{method}")
    paths = Paths.of(ci_cfg, tiny_pipeline)
    run_dir = paths.rl_run(f"{algo}-{method}")
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    keys = ("proxy_reward", "train_reward", "gold_score", "completion_words", "repeated_trigrams", "train_group_std")
    for key in keys:
        assert all(key in r for r in rows), key
    # the monitor (KL, held-out RM) measures every rl.monitor_every-th step and the last: steps 0 and 3 of 4
    assert ci_cfg.rl.monitor_every == 4
    for key in ("kl_to_ref", "heldout_reward"):
        assert [key in r for r in rows] == [True, False, False, True], key
    if method == "vanilla":  # the proxy column is the vanilla RM's score: for vanilla, its training reward
        assert all(r["proxy_reward"] == r["train_reward"] for r in rows)
    if method == "r2m":  # R2M trains on its own reward; the proxy column stays the frozen vanilla RM
        assert any(abs(r["proxy_reward"] - r["train_reward"]) > 1e-6 for r in rows[1:])
    assert rows[0]["kl_to_ref"] == pytest.approx(0.0, abs=1e-4)  # the first rollout comes from the reference
    assert (run_dir / "round_1" / "policy" / "model.safetensors").exists()
    assert (run_dir / "round_2" / "policy" / "model.safetensors").exists()
    final = load_file(run_dir / "final" / "policy" / "model.safetensors")
    ref = load_file(paths.sft / "model.safetensors")
    assert any(not torch.equal(final[k], ref[k]) for k in final)  # RL changed the policy
    assert out["metrics"]["steps"] == 4
    if method in ("r2m", "iter_head"):
        assert all("r2m_grebt" in r and "r2m_omega" in r for r in rows)
        assert (run_dir / "final" / "reward_head" / "r2m_head.safetensors").exists()
        assert len(out["metrics"]["rm_test_accuracy_per_round"]) == 2
        # the cross-attention's part of the reward alone, per round (iter_head has none)
        assert len(out["metrics"].get("attention_only_accuracy_per_round", [])) == (2 if method == "r2m" else 0)
    if method == "pretrained_rm":
        assert (run_dir / "final" / "reward_model" / "head.safetensors").exists()
    import tasks.evaluate as evaluate_mod

    generated = []
    real = evaluate_mod.eval_generations
    monkeypatch.setattr(evaluate_mod, "eval_generations", lambda *a, **k: generated.append(1) or real(*a, **k))
    compared = []
    real_compare = evaluate_mod.compare
    monkeypatch.setattr(evaluate_mod, "compare", lambda *a, **k: compared.append(1) or real_compare(*a, **k))
    ev = run_stage("evaluate", ci_cfg, tiny_pipeline, mlflow=False, run=f"{algo}-{method}")["metrics"]
    # the final round's pairs are judged once (vs reference, vs SFT), each other chosen round once more
    other_rounds = {c["round"] for c in ev["checkpoints"].values()} - {2}
    assert len(compared) == 2 * (1 + len(other_rounds))
    final = ev["checkpoints"]["final"]
    assert final["vs_reference"] == {k: ev["vs_reference"][k] for k in final["vs_reference"]}
    # the final policy and round 1: round 2 is what final/ copies, its (greedy) generations are the final's
    assert len(generated) == 2
    assert ev["rounds"][-1]["policy_completion_words"] == ev["policy_completion_words"]
    for key in ("vs_reference", "vs_sft"):
        assert ev[key]["n"] == 12 and 0.0 <= ev[key]["win_rate_ties_half"] <= 1.0
        assert ev[key]["ci_low"] <= ev[key]["win_rate_ties_half"] <= ev[key]["ci_high"]
    assert 0.0 <= ev["rm_test"]["accuracy"] <= 1.0
    if method in ("r2m", "iter_head"):  # taken from the run's export of its final head: what scoring here gives
        from r2m.evaluation.accuracy import pair_accuracy
        from r2m.evaluation.policy_pairs import run_reward
        from r2m.models.builders import load_causal_lm

        policy, tok = load_causal_lm(run_dir / "final" / "policy")
        score = run_reward(ci_cfg, paths, run_dir / "final", policy, tok)
        test = read_jsonl(paths.data / "rm_test.jsonl", PAIR_SCHEMA)
        assert ev["rm_test"] == pair_accuracy(score, test)
        assert evaluate_mod.exported_accuracy(run_dir / "final", test) == ev["rm_test"]
        assert evaluate_mod.exported_accuracy(run_dir / "final", test[1:]) is None  # other pairs: scored anew
    assert [r["round"] for r in ev["rounds"]] == [1, 2]
    assert set(ev["checkpoints"]) == {"final", "best_proxy", "best_heldout", "oracle"}
    assert ev["checkpoints"]["final"]["round"] == 2
    oracle = ev["checkpoints"]["oracle"]
    assert oracle["gold"] == max(r["gold"] for r in ev["rounds"])
    for choice in ev["checkpoints"].values():
        assert 0.0 <= choice["vs_sft"]["win_rate_ties_half"] <= 1.0 and choice["vs_sft"]["n_valid"] <= 12


def test_report_after_runs(tiny_pipeline, ci_cfg):
    runs = ci_cfg.run_names()  # params.yaml's matrix: grpo-vanilla, grpo-r2m
    for run in runs:
        if not (tiny_pipeline / "metrics" / "eval" / f"{run}.json").exists():
            pytest.skip("needs test_rl_then_evaluate first")
    out = run_stage("report", ci_cfg, tiny_pipeline, mlflow=False)
    for name in ("proxy_vs_gold", "gold_vs_kl", "length"):
        assert (tiny_pipeline / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert all(run in out["table"] for run in runs)


def test_evaluate_command_after_runs(tiny_pipeline, ci_cfg):
    from tasks.judging import evaluate_command

    runs = ci_cfg.run_names()
    for run in runs:
        if not (tiny_pipeline / "metrics" / "eval" / f"{run}_generations.jsonl").exists():
            pytest.skip("needs test_rl_then_evaluate first")
    out = evaluate_command(ci_cfg, tiny_pipeline, mlflow=False, progress=False)
    pairs = [(w["a"], w["b"]) for w in out["win_rates"]]
    assert pairs == [
        ("grpo-vanilla", "reference"),
        ("grpo-vanilla", "sft"),
        ("grpo-r2m", "reference"),
        ("grpo-r2m", "sft"),
        ("grpo-r2m", "grpo-vanilla"),  # each method head-to-head against vanilla RL
    ]
    assert all(w["n"] == 12 and w["invalid"] == 0 for w in out["win_rates"])
    ev = json.loads((tiny_pipeline / "metrics" / "eval" / "grpo-r2m.json").read_text())
    r2m_vs_ref = out["win_rates"][2]
    assert r2m_vs_ref["wins"] == ev["vs_reference"]["wins"]  # same gold judge, same generations as the stage
    for run in runs:
        assert out["reward_accuracy"][run]["rm_test"] == ev["rm_test"] if run == "grpo-r2m" else True
        pp = out["reward_accuracy"][run]["policy_pairs"]
        assert pp is None or 0.0 <= pp["accuracy"] <= 1.0
        assert "gold_score_final" in out["over_optimisation"][run]
    report = (tiny_pipeline / "reports" / "gold" / "report.md").read_text()
    assert "| grpo-r2m | grpo-vanilla | 12 |" in report
    from tasks.judging import judge_command

    one = judge_command(ci_cfg, tiny_pipeline, "grpo-r2m@round_1", "sft", mlflow=False, progress=False)
    assert one["report"]["n"] == 12  # a round checkpoint, generated on the fly
    assert (tiny_pipeline / "reports" / "gold" / "grpo-r2m@round_1_vs_sft_verdicts.jsonl").exists()


@pytest.fixture(scope="module")
def peer_inputs(tiny_pipeline, ci_cfg):
    """The optional stages the peers need, once: the ensemble's RMs (and WARM) and PAR's reference scores."""
    ens = run_stage("reward_ensemble", ci_cfg, tiny_pipeline, mlflow=False)
    par = run_stage("par_reference", ci_cfg, tiny_pipeline, mlflow=False)
    return tiny_pipeline, ens, par


def test_optional_stages_make_the_ensemble_warm_and_par_centres(peer_inputs, ci_cfg):
    wd, ens, par = peer_inputs
    d = Path(wd) / "models" / "rm_ensemble"
    assert sorted(p.name for p in d.iterdir()) == ["member_0", "member_1", "normalisation.json", "warm"]
    members = [load_file(d / f"member_{i}" / "head.safetensors") for i in range(2)]
    assert not torch.equal(members[0]["weight"], members[1]["weight"])  # own seeds and bootstrap resamples
    m = ens["metrics"]
    assert len(m["members"]) == 2 and set(m["ensemble_test_accuracy"]) == {"mean", "min", "uwo"}
    assert 0.0 <= m["warm_test_accuracy"] <= 1.0 and len(m["warm_member_test_accuracy"]) == 2
    rows = [json.loads(x) for x in (Path(wd) / "models" / "par_reference.jsonl").read_text().splitlines()]
    assert len(rows) == ci_cfg.data.n_rl_prompts and all(len(r["responses"]) == ci_cfg.methods.par.n_refs for r in rows)
    assert par["metrics"]["n_prompts"] == len(rows)


@pytest.mark.parametrize(
    ("algo", "method"),
    [
        ("grpo", "kl"),
        ("grpo", "par"),
        ("rloo", "ensemble_mean"),
        ("grpo", "ensemble_min"),
        ("grpo", "ensemble_uwo"),
        ("rloo", "warm"),
        ("grpo", "length_penalty"),
        ("grpo", "repetition_penalty"),
    ],
)
def test_peer_methods_run_and_log_the_common_yardsticks(peer_inputs, ci_cfg, algo, method):
    wd = peer_inputs[0]
    out = run_stage("rl", ci_cfg, wd, mlflow=False, run=f"{algo}-{method}")
    rows = [
        json.loads(x)
        for x in (Paths.of(ci_cfg, wd).rl_run(f"{algo}-{method}") / "metrics.jsonl").read_text().splitlines()
    ]
    assert out["metrics"]["steps"] == 4
    for key in ("proxy_reward", "train_reward", "gold_score", "completion_words", "repeated_trigrams"):
        assert all(key in r for r in rows), key
    assert "kl_to_ref" in rows[0] and "heldout_reward" in rows[-1]
    differs = any(abs(r["proxy_reward"] - r["train_reward"]) > 1e-6 for r in rows)
    # the proxy column stays the frozen vanilla RM's; kl trains on it (with TRL's KL term), a penalty adds to it,
    # every other peer trains on a reward of its own
    if method.endswith("_penalty"):
        name = method.split("_")[0]
        w = ci_cfg.methods.length_penalty.weight if name == "length" else 1.0
        for r in rows:  # batch means: the penalty is added row by row, so the means add too
            assert r["train_reward"] == pytest.approx(r["proxy_reward"] + w * r[f"penalty_{name}"], abs=1e-5)
    else:
        assert differs == (method != "kl")
    if method.startswith("ensemble"):
        assert all("ensemble_member_std" in r for r in rows)
    if method == "par":
        assert all(0.0 < r["train_reward"] < 1.0 for r in rows)  # a sigmoid
