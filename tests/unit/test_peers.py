"""The peers' rewards on hand-made tensors and stand-in reward models: ensembles (mean, worst case, UWO), WARM's
weight average, PAR's centred sigmoid, TRL's penalties added to a base reward, and the registry's consistency."""

from __future__ import annotations

import math

import pytest
import torch

from r2m.config import METHODS as CONFIG_METHODS
from r2m.rl.methods import METHODS, Method
from r2m.rl.peers import (
    EnsembleScorer,
    PARScorer,
    PenalisedScorer,
    average_weights,
    bootstrap,
    combine,
    normalise_stats,
)
from r2m.rl.variants import VARIANTS
from tests.conftest import REPO
from tests.unit.test_rl_parts import _RM


def test_combine_mean_min_and_uwo_by_hand():
    s = torch.tensor([[1.0, -1.0, 0.0], [3.0, -1.0, 2.0]])  # 2 members x 3 responses
    assert combine(s, "mean").tolist() == [2.0, -1.0, 1.0]
    assert combine(s, "min").tolist() == [1.0, -1.0, 0.0]
    # population variance over members: 1, 0, 1; lambda 0.5
    assert combine(s, "uwo", 0.5).tolist() == [1.5, -1.0, 0.5]
    with pytest.raises(ValueError, match="unknown ensemble combination"):
        combine(s, "max")


def test_ensemble_normalises_each_member_before_combining():
    a, b = _RM(1.0), _RM(10.0, shift=5.0)  # b = 10 x a + 5: after normalisation the two agree
    stats_a = normalise_stats(torch.tensor([1.0, 3.0]))  # mean 2, std 1
    stats_b = normalise_stats(torch.tensor([15.0, 35.0]))  # mean 25, std 10
    assert stats_a == (2.0, 1.0) and stats_b == (25.0, 10.0)
    ens = EnsembleScorer([a, b], [stats_a, stats_b], "uwo", lam=3.0)
    out = ens(["x", "xxx", "xxxxx"])
    assert out.tolist() == pytest.approx([-1.0, 1.0, 3.0])  # equal members: no variance, UWO = mean
    assert ens.last_members.shape == (2, 3)
    with pytest.raises(ValueError, match=">= 2 members"):
        EnsembleScorer([a], [stats_a], "mean")


def test_bootstrap_is_seeded_and_resamples_with_replacement():
    rows = [{"i": i} for i in range(50)]
    one, again, other = bootstrap(rows, 3), bootstrap(rows, 3), bootstrap(rows, 4)
    assert one == again and one != other and len(one) == 50
    assert len({r["i"] for r in one}) < 50  # with replacement: some rows twice, some never


def test_average_weights_is_the_elementwise_mean():
    torch.manual_seed(0)
    nets = [torch.nn.Linear(3, 1) for _ in range(3)]
    avg = average_weights(nets)
    assert torch.allclose(avg["weight"], torch.stack([n.weight for n in nets]).mean(0))
    assert torch.allclose(avg["bias"], (nets[0].bias + nets[1].bias + nets[2].bias) / 3)
    with pytest.raises(ValueError, match="different parameter names"):
        average_weights([torch.nn.Linear(3, 1), torch.nn.Sequential(torch.nn.Linear(3, 1))])


def test_par_is_the_sigmoid_of_the_score_minus_the_prompts_reference_score():
    rm = _RM(1.0)
    par = PARScorer(rm, {"p": 2.0, "q": 5.0})
    out = par(["px", "pxxx", "qxxx"], None, 0, rm_prompts=["p", "p", "q"])  # scores 2, 4, 4
    want = [1 / (1 + math.exp(-d)) for d in (0.0, 2.0, -1.0)]
    assert out.tolist() == pytest.approx(want)
    assert par.cache["step"] == 0 and par.cache["rte"].shape == (3, 1)  # kept for the frozen proxy
    with pytest.raises(KeyError, match="no reference score"):
        par(["zx"], None, 0, rm_prompts=["z"])
    with pytest.raises(ValueError, match="RM prompt of every row"):
        par(["px"], None, 0)


def test_trl_penalties_add_to_the_base_reward():
    from trl.rewards import get_repetition_penalty_reward, get_soft_overlong_punishment

    base = lambda texts, ppass, step, **kw: torch.tensor([1.0, 1.0])  # noqa: E731
    scorer = PenalisedScorer(
        base,
        [
            ("length", get_soft_overlong_punishment(10, 4), 2.0),  # > 6 tokens: (6 - n) / 4, -1 beyond 10
            ("repetition", get_repetition_penalty_reward(2, -1.0), 1.0),
        ],
    )
    ids = [[1, 2, 3], [5, 5, 5, 5, 5, 5, 5, 5]]  # 3 tokens, no repeats; 8 tokens, bigrams all "5 5"
    out = scorer(["a", "b"], None, 0, completion_ids=ids)
    # row 2: length (6 - 8) / 4 = -0.5 (x2 = -1); repetition 1 - 1/7 of -1
    assert out.tolist() == pytest.approx([1.0, 1.0 - 1.0 - 6 / 7])
    assert scorer.last_penalties["length"].tolist() == [0.0, -0.5]
    assert scorer.base_rewards.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="completion token ids"):
        scorer(["a"], None, 0)


def test_registry_is_the_one_method_list():
    assert CONFIG_METHODS == tuple(METHODS)
    for name, v in VARIANTS.items():  # every R2M variant is a registry entry with its switches
        assert METHODS[name].variant is v and METHODS[name].reward == "r2m"
    assert METHODS["r2m"].updates == "online" and METHODS["r2m_frozen"].updates == "none"
    assert {m.combine for m in METHODS.values() if m.reward == "ensemble"} == {"mean", "min", "uwo"}
    assert METHODS["kl"].kl and METHODS["early_stop"].checkpoint == "best_heldout"
    with pytest.raises(ValueError, match="variant"):
        Method("bad", reward="r2m")
    with pytest.raises(ValueError, match="combines"):
        Method("bad", reward="ensemble", combine="max")


def test_early_stop_reads_vanillas_run_at_the_heldout_pick():
    from r2m.config import load_config
    from r2m.evaluation.results import ResultsError, reported_at
    from r2m.rl.methods import run_methods

    assert run_methods(["early_stop", "vanilla", "r2m"]) == ["vanilla", "r2m"]
    cfg = load_config(REPO / "params.yaml", overrides=["rl.methods=[early_stop, par]", "rl.algos=[grpo]"])
    assert cfg.run_names() == ["grpo-vanilla", "grpo-par"]
    run = {
        "rows": [{"step": 1}],
        "evaluation": {"checkpoints": {"final": {"gold": -5.0}, "best_heldout": {"gold": -1.0}}},
    }
    got = reported_at(run, "best_heldout")
    assert got["evaluation"]["checkpoints"]["final"] == {"gold": -1.0} and got["rows"] == []
    assert run["evaluation"]["checkpoints"]["final"] == {"gold": -5.0}  # the run itself is untouched
    with pytest.raises(ResultsError, match="no 'oracle' checkpoint"):
        reported_at(run, "oracle")


def test_dvc_yaml_adds_the_optional_stages_and_inputs_a_method_needs():
    import yaml

    from r2m.config import load_config
    from tasks import dvc_yaml

    plain = yaml.safe_load(dvc_yaml.render(load_config(REPO / "params.yaml")))
    assert "reward_ensemble" not in plain["stages"] and "par_reference" not in plain["stages"]
    assert plain["stages"]["rl"]["foreach"]["grpo-r2m"] == {"algo": "grpo", "method": "r2m", "inputs": "models/rm"}
    cfg = load_config(REPO / "params.yaml", overrides=["rl.methods=[vanilla, warm, par, early_stop]"])
    doc = yaml.safe_load(dvc_yaml.render(cfg))
    assert {"reward_ensemble", "par_reference"} <= set(doc["stages"])
    items = doc["stages"]["rl"]["foreach"]
    assert list(items) == ["grpo-vanilla", "grpo-warm", "grpo-par"]  # early_stop: vanilla's run
    assert items["grpo-warm"]["inputs"] == "models/rm_ensemble"
    assert items["grpo-par"]["inputs"] == "models/par_reference.jsonl"
    assert "${item.inputs}" in doc["stages"]["rl"]["do"]["deps"]
    assert list(doc["stages"]["evaluate"]["foreach"]) == list(items)


def test_config_rejects_bad_method_parameters():
    from r2m.config import ConfigError, load_config

    for bad, msg in (
        ("methods.kl.beta=0", "kl.beta must be > 0"),
        ("methods.ensemble.k=1", "ensemble.k"),
        ("methods.repetition_penalty.max_penalty=0.5", "methods.repetition_penalty.max_penalty: must be <= 0"),
        ("methods.length_penalty.cache=100", "length_penalty.cache must be in"),
    ):
        with pytest.raises(ConfigError, match=msg):
            load_config(REPO / "params.yaml", overrides=[bad])


def test_every_method_params_section_exists():
    from r2m.config import Config

    sections = {f for f in Config().to_dict()["methods"]} | {"r2m"}
    for name, m in METHODS.items():
        assert m.params is None or m.params in sections, name


def test_readme_holds_the_registrys_table():
    from r2m.rl.methods import methods_table

    assert methods_table(markdown=True) in (REPO / "README.md").read_text(), "paste `r2m methods --markdown`"


def test_early_stop_has_no_rl_run_of_its_own(tmp_path):
    from r2m.config import ConfigError, load_config
    from r2m.paths import Paths
    from r2m.rl.assembly import build_run

    cfg = load_config(REPO / "params.yaml", profile="ci")
    with pytest.raises(ConfigError, match="no RL run of its own: it reads 'vanilla'"):
        build_run(cfg, Paths.of(cfg, tmp_path), "grpo", "early_stop")
