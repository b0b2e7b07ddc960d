"""Schedules against a real ``prefect server start`` on 127.0.0.1: a served schedule fires and its run completes;
the deployments of ``prefect.yaml`` deploy and run on a process worker; Prefect's CLI listings work with the pinned
stack; ``r2m schedule`` refuses when there is no server to keep its schedules."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(shutil.which("prefect") or "prefect").parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "250"}
    env |= {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5", "PREFECT_RUNNER_POLL_FREQUENCY": "5"}
    env |= {"PREFECT_WORKER_QUERY_SECONDS": "5", "PREFECT_WORKER_PREFETCH_SECONDS": "10"}
    return env | ({"PREFECT_API_URL": url} if url else {})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A Prefect server on a free port with its own home: yields (api url, env for clients)."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = _env(home, url)
    log = open(home / "server.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (home / "server.log").read_text()[-3000:]
            time.sleep(1)
        yield url, env, home
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        assert "Can't evaluate bulk DML" not in (home / "server.log").read_text()  # the scheduler ran cleanly


def _runs(url: str, deployment: str, state: str) -> list[dict]:
    """Flow runs of the deployment named ``deployment`` in state type ``state``."""
    deps = httpx.post(f"{url}/deployments/filter", json={"deployments": {"name": {"any_": [deployment]}}}).json()
    assert len(deps) == 1, deps
    body = {"deployments": {"id": {"any_": [deps[0]["id"]]}}, "flow_runs": {"state": {"type": {"any_": [state]}}}}
    return httpx.post(f"{url}/flow_runs/filter", json=body).json()


def _wait_for(url: str, deployment: str, timeout_s: float, proc: subprocess.Popen | None = None) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else "the serving process died"
        try:
            done = _runs(url, deployment, "COMPLETED")
        except AssertionError:  # the deployment is not registered yet
            done = []
        if done:
            return done[0]
        failed = _runs_or_empty(url, deployment, "FAILED") + _runs_or_empty(url, deployment, "CRASHED")
        assert not failed, failed
        time.sleep(2)
    raise AssertionError(f"no run of deployment {deployment!r} completed within {timeout_s} s")


def _runs_or_empty(url: str, deployment: str, state: str) -> list[dict]:
    try:
        return _runs(url, deployment, state)
    except AssertionError:
        return []


def _prefect(env: dict[str, str], *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    p = subprocess.run([BIN / "prefect", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, f"prefect {' '.join(args)}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return p


def test_a_served_interval_schedule_fires_and_its_run_completes(server, tmp_path):
    url, env, _ = server
    cmd = [BIN / "r2m", "schedule", "--interval", "60", "--dry-run", "--name", "every-minute"]
    cmd += ["--params", str(REPO / "params.yaml"), "--workdir", str(tmp_path)]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        run = _wait_for(url, "every-minute", timeout_s=240, proc=proc)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert run["parameters"]["dry_run"] is True and run["parameters"]["workdir"] == str(tmp_path)
    dep = httpx.post(f"{url}/deployments/filter", json={"deployments": {"name": {"any_": ["every-minute"]}}}).json()[0]
    assert dep["global_concurrency_limit"]["limit"] == 1  # (the field "concurrency_limit" is deprecated: None)
    assert dep["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert [s["schedule"]["interval"] for s in dep["schedules"]] == [60.0]
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing
    assert "Flow Runs" in _prefect(env, "flow-run", "ls").stdout  # the listings do not 422 with the pinned fastapi
    listed = json.loads(_prefect(env, "flow-run", "ls", "--state-type", "COMPLETED", "--output", "json").stdout)
    assert run["id"] in {r["id"] for r in listed}
    assert "every-minute" in _prefect(env, "deployment", "ls").stdout


def test_the_prefect_yaml_deployments_run_on_a_process_worker(server, tmp_path):
    url, env, _ = server
    project = tmp_path / "project"  # prefect deploy runs from a copy: nothing is written into the checkout
    project.mkdir()
    for name in ("prefect.yaml", "params.yaml"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "flows", project / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "configs", project / "configs")
    _prefect(env, "work-pool", "create", "r2m-process", "--type", "process", cwd=project)
    _prefect(env, "--no-prompt", "deploy", "--all", cwd=project)
    listed = _prefect(env, "deployment", "ls").stdout
    flows = {"nightly": "r2m-pipeline", "rl-rounds": "r2m-rl-rounds", "evaluation": "r2m-evaluation"}
    for dep, flow in (flows | {"promotion": "r2m-promotion"}).items():
        assert f"{flow}/{dep}" in listed, listed
    deps = httpx.post(f"{url}/deployments/filter", json={}).json()
    by_name = {d["name"]: d for d in deps}
    assert [s["active"] for s in by_name["nightly"]["schedules"]] == [True]
    for name in ("nightly", "rl-rounds", "evaluation", "promotion"):
        assert by_name[name]["global_concurrency_limit"]["limit"] == 1, name
        assert by_name[name]["concurrency_options"]["collision_strategy"] == "ENQUEUE", name
    _prefect(env, "deployment", "run", "r2m-pipeline/nightly", "--param", "dry_run=true", cwd=project)
    _prefect(env, "worker", "start", "--pool", "r2m-process", "--run-once", cwd=project)
    _wait_for(url, "nightly", timeout_s=120)
    assert "r2m-process" in _prefect(env, "work-pool", "ls").stdout


def test_schedule_refuses_without_a_server(tmp_path):
    home = tmp_path / "home"
    cmd = [BIN / "r2m", "schedule", "--cron", "0 3 * * *", "--params", str(REPO / "params.yaml")]
    unset = subprocess.run(cmd, env=_env(home, None), capture_output=True, text=True, timeout=120)
    assert unset.returncode == 2 and unset.stderr.count("\n") == 1, unset.stderr
    assert unset.stderr.startswith("error: schedule: PREFECT_API_URL is unset") and "ephemeral" in unset.stderr
    dead = f"http://127.0.0.1:{_free_port()}/api"
    down = subprocess.run(cmd, env=_env(home, dead), capture_output=True, text=True, timeout=120)
    assert down.returncode == 2 and f"no Prefect server answers at PREFECT_API_URL={dead}" in down.stderr
