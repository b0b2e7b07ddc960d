from pathlib import Path

import pytest

from r2m.config import Config, ConfigError, load_config, parse_override

REPO = Path(__file__).resolve().parents[2]


def test_params_yaml_matches_dataclass_defaults():
    # params.yaml is the tiny experiment: loading it with the (empty) tiny profile gives the dataclass defaults
    assert load_config(REPO / "params.yaml").to_dict() == Config().to_dict()


def test_profile_overrides_params_and_cli_overrides_profile():
    cfg = load_config(REPO / "params.yaml", profile="ci", overrides=["rl.steps=6", "rl.rounds=3"])
    assert cfg.profile == "ci"
    assert cfg.data.n_sft == 400  # from configs/ci.yaml
    assert (cfg.rl.steps, cfg.rl.rounds) == (6, 3)  # from the overrides


def test_parse_override_yaml_values():
    assert parse_override("rl.methods=[vanilla, r2m]") == {"rl": {"methods": ["vanilla", "r2m"]}}
    assert parse_override("rl.lr=1e-4") == {"rl": {"lr": 1e-4}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rl.stepz=3", "unknown key 'rl.stepz'"),
        ("rl.steps=abc", "rl.steps: expected an integer"),
        ("rl.algos=[ppo]", "unknown algorithm 'ppo'"),
        ("rl.methods=[magic]", "unknown method 'magic'"),
        ("rl.steps=7", "multiple of rl.rounds"),
        ("reward_model.train_trunk=3", "expected true/false"),
        ("r2m.alpha=1.5", "param r2m.alpha: must be in [0, 1], got 1.5"),
        ("r2m.rm_updates_per_step=0", "param r2m.rm_updates_per_step: must be >= 1, got 0"),
        ("r2m.update_feedback=later", "r2m.update_feedback must be one of scoring, updated"),
        ("r2m.self_labels=gold", "r2m.self_labels must be one of recomputed, annotation"),
        ("r2m.gre_std_floor=-1", "param r2m.gre_std_floor: must be >= 0"),
        ("rl.monitor_sample=-1", "param rl.monitor_sample: must be >= 0"),
        ("rl.monitor_every=0", "param rl.monitor_every: must be >= 1"),
        # R2M updates once per generation batch: several passes over a batch are not a setting
        ("rl.num_iterations=2", "unknown key 'rl.num_iterations'"),
        ("rl.steps_per_generation=2", "unknown key 'rl.steps_per_generation'"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(REPO / "params.yaml", overrides=[override])


def test_bad_file_names_the_file(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.yaml").write_text("{}\n")
    p = tmp_path / "params.yaml"
    p.write_text("rl:\n  steps: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"params.yaml: rl.steps: expected an integer"):
        load_config(p)
    p.write_text("profile: nope\n")
    with pytest.raises(ConfigError, match=r"profile 'nope': no file .*nope.yaml \(known profiles: tiny\)"):
        load_config(p)


def test_profile_may_not_set_the_dvc_matrix(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.yaml").write_text("rl:\n  methods: [r2m]\n")
    (tmp_path / "params.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"tiny.yaml: rl.methods cannot be set in a profile"):
        load_config(tmp_path / "params.yaml")


def test_a_missing_params_file_is_an_error(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"missing.yaml: no such params file"):
        load_config(tmp_path / "missing.yaml")
    cfg = load_config(None, configs_dir=tmp_path / "configs")  # defaults only, explicitly
    assert cfg.profile == "tiny" and cfg.rl.steps == Config().rl.steps


def test_fingerprint_changes_with_section():
    a, b = Config(), Config()
    b.rl.lr = 1.0
    assert a.fingerprint("data") == b.fingerprint("data")
    assert a.fingerprint("rl") != b.fingerprint("rl")
    assert a.run_names() == ["grpo-vanilla", "grpo-r2m"]


def test_prompt_format_render(tmp_path):
    from r2m.config import PolicyConfig
    from r2m.models.tokenizer import train_bpe_tokenizer
    from r2m.prompts import render_prompt

    tok = train_bpe_tokenizer(["hello world TL;DR: hi"] * 4, vocab_size=300)
    assert render_prompt(tok, "POST: x\nTL;DR:", PolicyConfig()) == "POST: x\nTL;DR:"
    chat = PolicyConfig(prompt_format="chat", instruction="Summarize.")
    with pytest.raises(ValueError, match="no chat template"):
        render_prompt(tok, "POST: x", chat)
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    assert render_prompt(tok, "POST: x", chat) == "<user>Summarize.\n\nPOST: x<assistant>"
    with pytest.raises(ConfigError, match="prompt_format"):
        load_config(REPO / "params.yaml", overrides=["policy.prompt_format=xml"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.source=reddit"], "data.source must be one of synthetic, tldr, summarize_from_feedback"),
        (["data.path=x.jsonl"], "data.source=synthetic reads no dataset: data.path must be ''"),
        (["data.source=preference", "judge.kind=local"], "data.source=preference needs data.path"),
        (
            ["data.source=tldr", "data.path=t.jsonl", "judge.kind=local"],
            "data.source=tldr has no preference pairs for the reward models: set data.pairs_source",
        ),
        (
            [
                "data.source=tldr",
                "data.path=t.jsonl",
                "data.pairs_source=tldr",
                "data.pairs_path=p",
                "judge.kind=local",
            ],
            "data.pairs_source must be one of summarize_from_feedback",
        ),
        (["data.source=preference", "data.path=p.jsonl", "data.pairs_path=q.jsonl"], "go together"),
        (["data.source=hh_rlhf", "data.path=hh.jsonl"], "data.source=hh_rlhf has no gold judge"),
    ],
)
def test_data_source_is_checked_when_the_config_loads(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(REPO / "params.yaml", profile="ci", overrides=overrides)


def test_real_data_source_loads():
    cfg = load_config(
        REPO / "params.yaml",
        overrides=["data.source=tldr", "data.path=t.jsonl", "data.pairs_source=summarize_from_feedback"]
        + ["data.pairs_path=c.jsonl", "judge.kind=local"],
    )
    assert (cfg.data.source, cfg.data.pairs_source, cfg.judge.kind) == ("tldr", "summarize_from_feedback", "local")


def test_data_sources_are_the_loaders():
    from r2m.config import COMPLETION_SOURCES, DATA_SOURCES, PAIR_SOURCES
    from r2m.data import loaders

    assert set(DATA_SOURCES) - {"synthetic"} <= set(loaders.LOADERS)
    assert set(PAIR_SOURCES) == set(loaders.PAIR_KINDS)
    assert set(COMPLETION_SOURCES) == set(loaders.COMPLETION_KINDS)


def test_a_params_file_edit_wins_over_the_profile(tmp_path):
    """`dvc exp run -S rl.steps=8` edits params.yaml; with `profile: ci` (rl.steps 4) the edit must not be undone."""
    import shutil

    import yaml

    shutil.copytree(REPO / "configs", tmp_path / "configs")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "ci"
    ci = load_config(REPO / "params.yaml", profile="ci")
    assert ci.rl.steps != 8 and ci.rl.steps != Config().rl.steps  # the profile sets it
    params["rl"]["steps"] = 8
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_config(tmp_path / "params.yaml")
    assert cfg.profile == "ci" and cfg.rl.steps == 8
    assert cfg.rl.rounds == ci.rl.rounds  # every other key the profile sets still comes from it
    assert load_config(tmp_path / "params.yaml", overrides=["rl.steps=6"]).rl.steps == 6  # --set goes last
    params["rl"]["steps"] = Config().rl.steps  # a default value is no edit: the profile's applies
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert load_config(tmp_path / "params.yaml").rl.steps == ci.rl.steps


def test_long_prompts_lose_their_start_and_are_counted():
    from r2m.config import PolicyConfig
    from r2m.models.tokenizer import train_bpe_tokenizer
    from r2m.prompts import fit_prompt, render_prompts_counted

    tok = train_bpe_tokenizer(["hello world TL;DR: hi there"] * 4, vocab_size=300)
    long = "POST: " + "hello world " * 5000 + "TL;DR:"  # 60,000 characters
    short = "POST: hi\nTL;DR:"
    cut, was_cut = fit_prompt(tok, long, 16)
    assert was_cut and cut.endswith("TL;DR:") and len(tok(cut, add_special_tokens=False)["input_ids"]) <= 16
    assert fit_prompt(tok, short, 16) == (short, False) and fit_prompt(tok, long, 0) == (long, False)
    cfg = PolicyConfig(max_prompt_tokens=16)
    out, n = render_prompts_counted(tok, [short, long, long], cfg)
    assert n == 2 and out[0] == short and out[1] == cut and len(out[2]) < 200
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    chat = PolicyConfig(prompt_format="chat", instruction="Summarize.", max_prompt_tokens=16)
    out, n = render_prompts_counted(tok, [long], chat)
    assert n == 1 and out[0] == f"<user>Summarize.\n\n{cut}<assistant>"  # the instruction is never cut
    with pytest.raises(ConfigError, match="policy.max_prompt_tokens"):
        load_config(REPO / "params.yaml", overrides=["policy.max_prompt_tokens=-1"])
