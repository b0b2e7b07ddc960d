"""Run a function on 2 CPU ranks (gloo, loopback) in fresh interpreters and collect what each rank returns.

Shared by the distributed tests: each rank sets one intra-op thread, joins a gloo process group through a file
rendezvous (a collective one rank never joins fails after 60 s instead of hanging the test run), runs ``work(rank,
shared)`` and saves its result (or its traceback) for the parent, which fails the test with a rank's error.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

RankWork = Callable[[int, Path], dict]


def _rank(r: int, world: int, work: RankWork, shared: str) -> None:
    torch.set_num_threads(1)
    init = f"file://{Path(shared) / 'rendezvous'}"
    dist.init_process_group("gloo", init_method=init, rank=r, world_size=world, timeout=timedelta(seconds=60))
    result: dict = {}
    try:
        result = work(r, Path(shared))
        dist.barrier()
    except Exception:  # reported to the parent, which fails the test with it
        result["error"] = traceback.format_exc()
    finally:
        torch.save(result, Path(shared) / f"rank{r}.pt")
        dist.destroy_process_group()


def run_ranks(work: RankWork, shared: Path, world: int = 2) -> list[dict]:
    """``work(rank, shared)`` on ``world`` spawned ranks; their results in rank order (skips without gloo).

    ``work`` must be a module-level function (it is pickled by reference) and return a dict of picklable values;
    ``shared`` is a directory all ranks can read and write.
    """
    import torch.multiprocessing as mp

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is unavailable")
    saved = os.environ.get("GLOO_SOCKET_IFNAME")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only (inherited by the ranks): no network needed
    try:
        # spawn, not fork: a forked rank inherits the threads and state earlier tests left in this process
        mp.start_processes(_rank, args=(world, work, str(shared)), nprocs=world, join=True, start_method="spawn")
    finally:
        if saved is None:
            os.environ.pop("GLOO_SOCKET_IFNAME", None)
    results = [torch.load(shared / f"rank{r}.pt", weights_only=False) for r in range(world)]  # written just above
    for res in results:
        assert "error" not in res, res["error"]
    return results
