"""The ``r2m`` command line: --version, and bad input as one line with exit status 2 before anything runs."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from click.testing import CliRunner

from flows.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_version():
    res = CliRunner().invoke(main, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"r2m, version {version('r2m')}"


def test_a_missing_params_file_stops_run_before_anything_is_written(tmp_path):
    res = CliRunner().invoke(main, ["run", "--params", str(tmp_path / "missing.yaml"), "--workdir", str(tmp_path)])
    assert res.exit_code == 2
    missing = tmp_path / "missing.yaml"
    hint = "(pass --params PATH, or run in the project directory)"
    assert res.stderr.strip() == f"error: run: {missing}: no such params file {hint}"
    assert list(tmp_path.iterdir()) == []  # no data/, no mlruns/, no flow run


def test_a_bad_key_is_one_line_before_the_flow_and_debug_shows_the_traceback(tmp_path):
    args = ["run", "--params", str(REPO / "params.yaml"), "--workdir", str(tmp_path), "--set", "rl.stepz=3"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: run: ") and "rl.stepz" in res.stderr
    assert list(tmp_path.iterdir()) == []
    from r2m.config import ConfigError

    debug = CliRunner().invoke(main, ["--debug", *args])
    assert isinstance(debug.exception, ConfigError) and "rl.stepz" in str(debug.exception)


def test_other_commands_share_the_one_line_errors(tmp_path):
    res = CliRunner().invoke(main, ["timings", "--params", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and res.stderr.startswith("error: timings: ") and "no such params file" in res.stderr
