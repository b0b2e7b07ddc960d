"""One writer per work directory: a second run fails at once naming the holder, the holder's own child processes
write, a dead holder's lock is taken over, other directories are independent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from r2m.workdir_lock import ENV, LOCK_FILE, WorkdirLocked, workdir_lock

HOLD = """
import sys, time
from r2m.workdir_lock import workdir_lock
with workdir_lock(sys.argv[1], command="holder"):
    print("locked", flush=True)
    time.sleep(600)
"""
TRY = """
import sys
from r2m.workdir_lock import WorkdirLocked, workdir_lock
try:
    with workdir_lock(sys.argv[1]):
        print("acquired")
except WorkdirLocked as e:
    print("refused:", e)
"""


def _env(inherit: bool) -> dict:
    env = dict(os.environ)
    if not inherit:
        env.pop(ENV, None)
    return env


def _try(workdir, inherit: bool = False) -> str:
    done = subprocess.run([sys.executable, "-c", TRY, str(workdir)], capture_output=True, text=True, env=_env(inherit))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_second_writer_is_refused_naming_the_holder_and_children_inherit(tmp_path):
    with workdir_lock(tmp_path, command="r2m run --profile ci"):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "r2m run --profile ci"
        out = _try(tmp_path)
        assert out.startswith("refused:") and f"in use by PID {os.getpid()}" in out and "r2m run --profile ci" in out
        assert _try(tmp_path, inherit=True) == "acquired"  # a stage the holder started
        with workdir_lock(tmp_path):  # re-entrant in the holder's own process
            pass
        assert _try(tmp_path / "other") == "acquired"  # another directory: independent
    assert ENV not in os.environ
    assert _try(tmp_path) == "acquired"  # released


def test_a_dead_holders_lock_is_taken_over(tmp_path, caplog):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=_env(False)
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirLocked, match=f"PID {proc.pid} .*holder"):
            with workdir_lock(tmp_path):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with caplog.at_level("WARNING"), workdir_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"PID {proc.pid}" in caplog.text and "no longer running" in caplog.text


def test_a_stale_token_in_the_environment_grants_nothing(tmp_path, monkeypatch):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=_env(False)
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        monkeypatch.setenv(ENV, f"{'0' * 32}:{(tmp_path / LOCK_FILE).resolve()}")  # not the holder's token
        with pytest.raises(WorkdirLocked):
            with workdir_lock(tmp_path):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_a_stage_in_a_locked_workdir_exits_2_with_one_line(tmp_path):
    start = time.monotonic()
    with workdir_lock(tmp_path, command="flow busy-run"):
        env = _env(False)
        done = subprocess.run(
            [sys.executable, "-m", "tasks", "prepare", "--profile", "ci", "--workdir", str(tmp_path), "--no-mlflow"],
            capture_output=True,
            text=True,
            env=env,
        )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: prepare: ")
    assert "in use by PID" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was written
    assert time.monotonic() - start < 120
