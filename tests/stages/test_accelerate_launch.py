"""The RL stage under ``accelerate launch`` on 2 CPU processes (gloo), end to end on the ``ci`` pipeline.

``accelerate launch --cpu --num_processes 2`` starts ONE process: accelerate's multi-CPU launch goes through mpirun
(``--mpirun_hostfile``), which this environment does not have. ``--multi_gpu --num_processes 2`` starts two ranks
through torchrun; with the GPUs hidden (``CUDA_VISIBLE_DEVICES=""``) the runner puts every model on the CPU and the
process group runs on gloo (``docs/scale-out.md``, "Checking the wiring on a CPU"). Checked: the stage exits 0; the
final policy is exported once; ``metrics.jsonl`` has one row per step; the exported R2M head is bitwise what every
rank held (the export compares the ranks' digests and logs the agreed one); a rerun of a finished run does nothing
on every rank; a run that crashes mid-round resumes and ends with the same bytes as an uninterrupted one.

Run as a module (``python -m tests.stages.test_accelerate_launch --crash-at N ...``), this file is a stage entry
point with a simulated crash: what ``accelerate launch`` starts for the resume test.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = "grpo-r2m"
DIGEST_LINE = re.compile(r"R2M head sha256 ([0-9a-f]{64}): identical on all (\d+) ranks")


def launch_unavailable() -> str | None:
    """Why a 2-process CPU launch cannot run here (None: it can)."""
    try:
        import accelerate  # noqa: F401
        import torch.distributed as dist
    except ImportError as e:  # pragma: no cover
        return f"accelerate / torch.distributed missing: {e}"
    if not (dist.is_available() and dist.is_gloo_available()):
        return "torch.distributed with gloo is unavailable"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(launch_unavailable() is not None, reason=str(launch_unavailable())),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    wd: Path, *overrides: str, module: str = "tasks", extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """``accelerate launch`` of the rl stage (grpo, r2m, ci profile) on 2 CPU ranks in ``wd``."""
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        module,
        *extra,
        "rl",
        "--algo",
        "grpo",
        "--method",
        "r2m",
        "--profile",
        "ci",
        "--workdir",
        str(wd),
        "--no-mlflow",
        "--params",
        str(wd / "params.yaml"),
        "--set",
        "threads=1",  # 2 ranks x 1 thread
        *(x for o in overrides for x in ("--set", o)),
    ]
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",  # CPU ranks (gloo) on any machine
        "GLOO_SOCKET_IFNAME": "lo",  # loopback only: no network needed
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def output(p: subprocess.CompletedProcess) -> str:
    return (p.stdout + p.stderr).replace("\r", "\n")


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def hashes(root: Path) -> dict[str, str]:
    return {
        f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def head_digest(path: Path) -> str:
    from r2m.distributed import state_digest
    from r2m.models.r2m_head import R2MRewardHead

    return state_digest(R2MRewardHead.load(path).state_dict())


def copy_upstream(tiny_pipeline: Path, dst: Path) -> Path:
    """A working directory with the upstream stages' outputs (prepare, sft, preferences, reward_model) and none of
    the RL runs."""
    shutil.copytree(tiny_pipeline, dst, ignore=shutil.ignore_patterns("rl", "rl.*", "timings"))
    return dst


@pytest.fixture(scope="module")
def launched(tiny_pipeline, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    wd = copy_upstream(tiny_pipeline, tmp_path_factory.mktemp("launch") / "wd")
    return wd, launch(wd, "rl.steps=2", "rl.rounds=1")


def test_two_cpu_processes_run_the_stage_and_write_once(launched):
    wd, p = launched
    assert p.returncode == 0, output(p)[-4000:]
    run = wd / "models/rl" / RUN
    fingerprint = json.loads((run / "run_config.json").read_text())
    assert fingerprint["world_size"] == 2  # two ranks ran (the global batch is 2 x rl.prompts_per_step prompts)
    ckpt = run / "checkpoints" / "checkpoint-2"
    assert (ckpt / "rng_state_0.pth").exists() and (ckpt / "rng_state_1.pth").exists()
    # exported once: one final policy, no staging directory left behind
    assert (run / "final/policy/model.safetensors").exists() and (run / "round_1/policy/model.safetensors").exists()
    assert sorted(f.name for f in run.iterdir()) == [
        "checkpoints",
        "final",
        "metrics.jsonl",
        "round_1",
        "run_config.json",
    ]
    assert json.loads((run / "final/round.json").read_text()) == {"round": 1, "step": 2}
    # one row per step, from the main process only
    assert [r["step"] for r in rows(run / "metrics.jsonl")] == [1, 2]
    assert [r["step"] for r in rows(wd / "timings/rl" / f"{RUN}.steps.jsonl")] == [1, 2]
    assert json.loads((wd / "metrics/rl" / f"{RUN}.json").read_text())["steps"] == 2
    # the reward function's metrics are the whole batch's: its mean reward is TRL's gathered one
    for r in rows(run / "metrics.jsonl"):
        assert r["train_reward"] == pytest.approx(r["reward"], abs=1e-5)


def test_the_exported_head_is_what_every_rank_held(launched):
    wd, p = launched
    assert p.returncode == 0, output(p)[-4000:]
    agreed = DIGEST_LINE.findall(output(p))
    assert len(agreed) == 1 and agreed[0][1] == "2", agreed  # one export (round 1; final is its copy), 2 ranks
    run = wd / "models/rl" / RUN
    assert head_digest(run / "round_1/reward_head") == head_digest(run / "final/reward_head") == agreed[0][0]


def test_a_rerun_of_a_finished_run_does_nothing_on_every_rank(launched):
    wd, _ = launched
    run = wd / "models/rl" / RUN
    before = hashes(run)
    p = launch(wd, "rl.steps=2", "rl.rounds=1")
    assert p.returncode == 0, output(p)[-4000:]
    assert output(p).count("already finished; nothing to do") == 2
    assert hashes(run) == before


def test_a_crashed_run_resumes_to_the_bytes_of_an_uninterrupted_one(tiny_pipeline, tmp_path):
    settings = ("rl.steps=4", "rl.rounds=2")  # ci: a checkpoint at step 2
    whole = copy_upstream(tiny_pipeline, tmp_path / "whole")
    p = launch(whole, *settings)
    assert p.returncode == 0, output(p)[-4000:]

    wd = copy_upstream(tiny_pipeline, tmp_path / "resumed")
    crashed = launch(wd, *settings, module="tests.stages.test_accelerate_launch", extra=("--crash-at", "3"))
    assert crashed.returncode != 0 and "simulated crash at step 3" in output(crashed)
    run = wd / "models/rl" / RUN
    assert (run / "round_1").exists() and not (run / "round_2").exists() and not (run / "final").exists()
    p = launch(wd, *settings)
    assert p.returncode == 0, output(p)[-4000:]
    assert json.loads((wd / "timings" / f"rl-{RUN}.json").read_text())["resumed_from_step"] == 2
    assert [r["step"] for r in rows(run / "metrics.jsonl")] == [1, 2, 3, 4]
    a, b = hashes(whole / "models/rl" / RUN), hashes(run)
    assert a.keys() == b.keys()
    differing = [k for k in a if a[k] != b[k]]
    assert not differing, f"the resumed 2-process run differs from the uninterrupted one in {differing}"


def crashing_stage_main(argv: list[str]) -> None:
    """``python -m tasks`` with a :class:`tests.helpers.crash.Crash` callback after step ``--crash-at``."""
    import tasks.rl
    from tasks.common import stage_main
    from tests.helpers.crash import Crash

    at = int(argv[argv.index("--crash-at") + 1])
    rest = argv[: argv.index("--crash-at")] + argv[argv.index("--crash-at") + 2 :]
    build = tasks.rl.build_run

    def build_run(*args, **kwargs):
        spec, reward_fn, tok = build(*args, **kwargs)
        spec.callbacks.append(Crash(at=at))
        return spec, reward_fn, tok

    tasks.rl.build_run = build_run
    stage_main(rest)


if __name__ == "__main__":
    crashing_stage_main(sys.argv[1:])
