"""``r2m run --dry-run``: every profile in configs/ loads, resolves its stages and passes the shape checks on
stand-ins built from the shipped config.json files (meta device, no download), and a broken profile is one clear
error."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from flows.dry_run import resolve_stages, run_dry_run
from r2m.config import ConfigError, load_config
from tasks import stages

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "configs" / "models"
PROFILES = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))
PAPER = ("tldr-pythia", "ultrafeedback-llama", "ultrafeedback-qwen")
_REPORTS: dict[str, dict] = {}

# (policy: hidden, layers, kv heads, vocab), (reward model: hidden, layers, vocab): the published configs
DIMS = {
    "tldr-pythia": ((2560, 32, 32, 50304), (2560, 32, 50304)),
    "ultrafeedback-llama": ((4096, 32, 8, 128256), (4096, 32, 128257)),
    "ultrafeedback-qwen": ((2048, 36, 2, 151936), (4096, 32, 128257)),
    "smol": ((576, 30, 3, 49152), (576, 30, 49152)),
    "smol-tldr": ((576, 30, 3, 49152), (576, 30, 49152)),
    "tiny": ((128, 2, 4, 1024), (128, 2, 1024)),
    "ci": ((128, 2, 4, 1024), (128, 2, 1024)),
}


def config(profile: str, *overrides: str):
    return load_config(REPO / "params.yaml", profile=profile, overrides=list(overrides))


def report(profile: str) -> dict:
    """The dry-run report of an unmodified profile (computed once per test session)."""
    if profile not in _REPORTS:
        _REPORTS[profile] = run_dry_run(config(profile), workdir=REPO, models_dir=MODELS)
    return _REPORTS[profile]


def dry_run_error(profile: str, *overrides: str, models_dir: Path = MODELS) -> str:
    with pytest.raises(ConfigError) as e:
        run_dry_run(config(profile, *overrides), workdir=REPO, models_dir=models_dir)
    message = str(e.value)
    assert "\n" not in message, message
    return message


def test_the_paper_profiles_and_their_model_configs_are_shipped():
    assert set(PAPER) <= set(PROFILES) and set(DIMS) == set(PROFILES)
    for d in MODELS.iterdir():
        if d.is_dir():
            cfg = json.loads((d / "config.json").read_text())
            assert {"model_type", "hidden_size", "num_hidden_layers", "architectures"} <= set(cfg), d.name
            assert not [f for f in d.iterdir() if f.name != "config.json"], f"{d.name}: config.json only, no weights"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_passes_its_dry_run(profile):
    cfg = config(profile)
    rep = report(profile)
    assert rep["ok"] and rep["profile"] == profile and rep["runs"] == cfg.run_names()
    assert [s["name"] for s in rep["stages"]] == [s.name for s in stages.STAGES if s.needed(cfg)]
    matrix = [s for s in rep["stages"] if s["matrix"]]
    assert matrix and all(s["runs"] == cfg.run_names() for s in matrix)
    (p_hidden, p_layers, p_kv, p_vocab), (r_hidden, r_layers, r_vocab) = DIMS[profile]
    policy, rm = rep["models"]["policy"], rep["models"]["reward_model"]
    keys = ("hidden_size", "num_layers", "num_kv_heads", "vocab_size")
    assert tuple(policy[k] for k in keys) == (p_hidden, p_layers, p_kv, p_vocab)
    assert (rm["hidden_size"], rm["num_layers"], rm["vocab_size"]) == (r_hidden, r_layers, r_vocab)
    b, k, s = cfg.rl.prompts_per_step * cfg.rl.num_generations, cfg.rl.num_generations, cfg.reward_model.max_length
    assert policy["last_hidden"] == [b, s, p_hidden] and rm["rte"] == [b, r_hidden]
    head = rep["heads"][0]
    assert head["rewards"] == [b] and head["feedback"] == [b, s, p_hidden] and head["rte"] == [b, r_hidden]
    assert head["attn_dim"] == (cfg.r2m.attn_dim or r_hidden)
    assert head["params"]["cross_attention"] == head["attn_dim"] * 2 * (r_hidden + p_hidden)
    assert head["real"]["rewards"] == [k] and head["real"]["padded_grad"] == 0.0
    trained = {f"attn.to_{n}.weight" for n in ("q", "k", "v", "out")} | {"head.weight"}
    assert set(head["real"]["grad_params"]) == trained  # the cross-attention and phi only
    assert "Dry run OK" in rep["table"] and f"{p_hidden}" in rep["table"]


@pytest.mark.parametrize(
    ("profile", "policy_params", "rm_params"),
    [("tldr-pythia", 2.78e9, 2.65e9), ("ultrafeedback-llama", 8.03e9, 7.50e9), ("ultrafeedback-qwen", 3.09e9, 7.50e9)],
)
def test_paper_profiles_use_the_published_models_and_settings(profile, policy_params, rm_params):
    cfg = config(profile)
    rep = report(profile)
    policy, rm = rep["models"]["policy"], rep["models"]["reward_model"]
    assert policy["params"] == pytest.approx(policy_params, rel=0.005)
    assert rm["params"] == pytest.approx(rm_params, rel=0.005)
    assert policy["config"].endswith(f"{cfg.policy.source.replace('/', '__')}/config.json")
    assert rm["architecture"].endswith("ForSequenceClassification") and rm["score_head"]["weight"] == [
        1,
        rm["hidden_size"],
    ]
    assert cfg.reward_model.pretrained_head and cfg.reward_model.epochs == 0 and not cfg.reward_model.train_trunk
    assert rep["heads"][0]["attn_dim"] == 2048 and rep["heads"][0]["num_heads"] == 1
    assert cfg.r2m.omega_floor in (0.6, 0.7) and cfg.r2m.alpha == 0.3
    assert cfg.rl.bf16 and cfg.threads == 0 and cfg.sft.steps == 0
    dialogue = profile.startswith("ultrafeedback")
    assert cfg.r2m.rm_lr == (1e-6 if dialogue else 5e-7)
    assert cfg.data.source == ("ultrafeedback" if dialogue else "tldr")
    judge = rep["judge"]
    assert judge["kind"] == "openai" and judge["template"] == ("alpaca_eval" if dialogue else "tldr")
    assert judge["api_key_env"] == "OPENAI_API_KEY" and judge["endpoint"].endswith("/chat/completions")


def test_the_stage_table_resolves_inputs_and_matrix_runs():
    cfg = config("ci", "rl.algos=[grpo, rloo]", "rl.methods=[vanilla, r2m, ensemble_mean]")
    rows = {r["name"]: r for r in resolve_stages(cfg)}
    assert "reward_ensemble" in rows and "par_reference" not in rows  # optional stages only when a method needs them
    assert rows["rl"]["runs"] == [
        "grpo-vanilla",
        "grpo-r2m",
        "grpo-ensemble_mean",
        "rloo-vanilla",
        "rloo-r2m",
        "rloo-ensemble_mean",
    ]
    assert "models/rl/rloo-r2m" in rows["rl"]["writes"] and "models/rl/rloo-r2m" in rows["evaluate"]["deps"]
    assert rows["register"]["needs_mlflow"] and rows["prepare"]["deps"] == []


def test_a_head_width_the_heads_do_not_divide_is_one_error():
    assert dry_run_error("tldr-pythia", "r2m.num_heads=3") == "r2m.num_heads (3) must divide r2m.attn_dim (2048)"
    assert "r2m.attn_dim (0 = D_rm = 128)" in dry_run_error("tiny", "r2m.num_heads=3")


def test_an_unknown_model_id_needs_a_config_json():
    message = dry_run_error("ultrafeedback-llama", "policy.source=acme/no-such-policy-r2m")
    assert message.startswith("policy.source='acme/no-such-policy-r2m': the dry run needs its config.json")
    assert "configs/models/acme__no-such-policy-r2m/config.json" in message and "Hugging Face cache" in message
    rm = dry_run_error("ultrafeedback-llama", "reward_model.trunk=acme/no-such-rm-r2m")
    assert rm.startswith("reward_model.trunk='acme/no-such-rm-r2m'")


def test_a_config_json_in_the_models_dir_or_a_model_directory_is_used(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(MODELS, models)
    shutil.copytree(MODELS / "Qwen__Qwen2.5-3B-Instruct", models / "acme__my-policy")
    cfg = config("ultrafeedback-llama", "policy.source=acme/my-policy")
    rep = run_dry_run(cfg, workdir=tmp_path, models_dir=models)
    assert rep["models"]["policy"]["hidden_size"] == 2048 and rep["heads"][0]["feedback"][-1] == 2048
    local = tmp_path / "my-local-model"
    shutil.copytree(MODELS / "HuggingFaceTB__SmolLM2-135M-Instruct", local)
    rep = run_dry_run(
        config("ultrafeedback-llama", "policy.source=my-local-model"), workdir=tmp_path, models_dir=models
    )
    assert rep["models"]["policy"]["hidden_size"] == 576 and rep["models"]["policy"]["config"].endswith("config.json")


def test_broken_profiles_name_the_key():
    assert "is not a sequence-classification checkpoint" in dry_run_error(
        "tldr-pythia", "reward_model.trunk=cleanrl/EleutherAI_pythia-2.8b-deduped__sft__tldr"
    )
    assert "max_position_embeddings (2048)" in dry_run_error("tldr-pythia", "reward_model.max_length=4096")
    assert dry_run_error("tldr-pythia", "rl.max_completion_length=600").startswith("rl.max_completion_length (600)")
    assert dry_run_error("smol", "judge.kind=openai", "judge.template=no-such-template.txt").startswith(
        "judge.template"
    )
    assert "judge.api_key_env" in dry_run_error("tldr-pythia", "judge.api_key_env=not a name")
    assert "cross-attention untrained" in dry_run_error("tiny", "r2m.omega_floor=1.0")
    with pytest.raises(ConfigError, match="reward_model.pretrained_head needs reward_model.trunk"):
        config("tiny", "reward_model.pretrained_head=true")


def test_the_api_key_is_named_never_read(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-r2m-dry-run-secret")
    rep = run_dry_run(config("tldr-pythia"), workdir=REPO, models_dir=MODELS)
    text = json.dumps(rep)
    assert "sk-r2m-dry-run-secret" not in text and "$OPENAI_API_KEY (named, not read)" in rep["table"]


def test_cli_dry_run_exits_0_runs_nothing_and_writes_nothing(tmp_path, monkeypatch):
    from flows.cli import main

    flow = types.ModuleType("flows.pipeline")  # a dry run that started the Prefect flow would fail here

    def no_flow(**_):
        raise AssertionError("--dry-run started the pipeline")

    flow.pipeline = no_flow
    monkeypatch.setitem(sys.modules, "flows.pipeline", flow)
    workdir = tmp_path / "wd"
    workdir.mkdir()
    for profile, hidden in (("ultrafeedback-llama", "4096"), ("tiny", "128")):
        args = ["run", "--params", str(REPO / "params.yaml"), "--profile", profile, "--workdir", str(workdir)]
        res = CliRunner().invoke(main, [*args, "--dry-run"], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert "Dry run OK" in res.output and f"profile {profile!r}" in res.output and hidden in res.output
    assert list(workdir.iterdir()) == []
    bad = CliRunner().invoke(main, [*args, "--dry-run", "--set", "r2m.num_heads=3"])
    assert (
        bad.exit_code == 2
        and bad.stderr.strip() == "error: dry run: r2m.num_heads (3) must divide r2m.attn_dim (0 = D_rm = 128)"
    )
    assert list(workdir.iterdir()) == []
