"""torch.distributed helpers for R2M's online head update when the RL stage runs on several processes.

Under ``accelerate launch`` every process holds a replica of the R2M head (cross-attention + phi) beside its policy
replica and scores only its own slice of the rollout batch. TRL gives each process whole groups: its sampler repeats
every prompt K times consecutively and accelerate hands process r the r-th block of ``per_device_train_batch_size``
rows, which the runner sets to ``rl.prompts_per_step * K`` (see ``docs/scale-out.md``). The GREBT loss of one
process is then the mean over its local groups, and the single-process loss over all N groups is

    L = (1 / N) sum_r n_r L_r,        n_r = groups on rank r,  N = sum_r n_r

so the gradient of L is the n_r-weighted mean of the ranks' gradients: :func:`all_reduce_grads`. After it every rank
holds the same gradient, clips it the same way and takes the same AdamW step: the replicas stay identical.

The run plumbing (``r2m.rl.runner``, ``callbacks``, ``reward``, ``assembly``) uses the rest: :func:`barrier` and
:func:`broadcast_object` around the files only the main process writes, :func:`weighted_means` for the per-step
metrics of the reward function, :func:`check_same_on_all_ranks` for the R2M head an export writes.

Every helper is a no-op (returns its input, runs no collective) when no process group is initialised or the world
has one process, so single-process runs execute exactly the ops they did before. Collectives run on the device of
the tensors given (NCCL needs CUDA tensors; gloo takes CPU ones); the helpers that build their own tensors use
:func:`collective_device`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "PartialGroupError",
    "ReplicaMismatchError",
    "all_gather_rows",
    "all_reduce_grads",
    "barrier",
    "broadcast_object",
    "broadcast_params",
    "check_same_on_all_ranks",
    "check_whole_groups",
    "collective_device",
    "is_distributed",
    "is_main_process",
    "launched_world_size",
    "rank",
    "state_digest",
    "weighted_mean",
    "weighted_means",
    "world_size",
]


class PartialGroupError(ValueError):
    """A process holds part of a GRPO / RLOO group: R2M's self-labels and group entropy need whole groups."""


class ReplicaMismatchError(RuntimeError):
    """Replicas that must be identical on every rank (the R2M head) differ between ranks."""


def launched_world_size() -> int:
    """The world size the launcher announced (``WORLD_SIZE``, set by ``accelerate launch`` / ``torchrun``); 1 for a
    plain process. Readable before the process group exists, unlike :func:`world_size`."""
    return int(os.environ.get("WORLD_SIZE", "1") or "1")


def launched_rank() -> int:
    """The rank the launcher announced (``RANK``); 0 for a plain process. Readable before the process group exists."""
    return int(os.environ.get("RANK", "0") or "0")


def is_distributed() -> bool:
    """True when a process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Processes in the default group; 1 without an initialised group."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group; 0 without an initialised group."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """Rank 0 (or no process group at all): the process that writes shared files."""
    return rank() == 0


def collective_device() -> torch.device:
    """Where a helper's own tensors go for a collective: the current CUDA device under NCCL alone, else the CPU
    (gloo, or the ``cpu:gloo`` half of a mixed backend)."""
    backend = str(dist.get_backend()) if is_distributed() else "gloo"
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank reaches this point (e.g. until the main process has written a file). No-op without a
    process group."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (any picklable value) on every rank; ``obj`` itself without a process group."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=collective_device())
    return box[0]


def weighted_means(values: Mapping[str, float], weights: Mapping[str, float]) -> dict[str, float]:
    """Per-key weighted means of scalar metrics over the ranks, in one all-reduce: ``sum_r w_r v_r / sum_r w_r``.

    Ranks may hold different keys: the reduction runs over the sorted union of every rank's keys, and a rank without
    a key weighs 0 for it. A key whose weights sum to 0 on all ranks is dropped.

    Args:
        values: this rank's metrics, ``{name: value}``.
        weights: ``{name: w_r}`` (e.g. the rows the metric is a mean over); a key absent here weighs 1.
    Returns:
        ``{name: mean}``, identical on every rank (this rank's keys first, in their order, then the others, sorted);
        ``dict(values)`` without a process group.
    """
    if not is_distributed():
        return dict(values)
    names_per_rank: list[list[str]] = [[] for _ in range(world_size())]
    dist.all_gather_object(names_per_rank, sorted(values))
    union = sorted({n for names in names_per_rank for n in names})
    buf = torch.zeros(2 * len(union), dtype=torch.float64, device=collective_device())  # [w_1 v_1, w_1, ...]
    for i, name in enumerate(union):
        if name in values:
            w = float(weights.get(name, 1.0))
            buf[2 * i] = w * float(values[name])
            buf[2 * i + 1] = w
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    sums = buf.view(-1, 2).tolist()
    means = {name: s / w for name, (s, w) in zip(union, sums, strict=True) if w > 0}
    return {**{k: means[k] for k in values if k in means}, **{k: v for k, v in means.items() if k not in values}}


def state_digest(state: Mapping[str, Tensor]) -> str:
    """sha256 of a state dict's names, dtypes, shapes and bytes (any device, any dtype): equal digests, bitwise
    equal states."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_same_on_all_ranks(state: Mapping[str, Tensor], what: str) -> str:
    """Raise :class:`ReplicaMismatchError` on every rank unless ``state`` is bitwise the same on all ranks; returns
    its :func:`state_digest`. Without a process group only the digest is computed."""
    digest = state_digest(state)
    if not is_distributed():
        return digest
    digests: list[str] = ["" for _ in range(world_size())]
    dist.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        listed = ", ".join(f"rank {r}: {d[:12]}" for r, d in enumerate(digests))
        raise ReplicaMismatchError(f"{what} differs between the ranks ({listed})")
    return digest


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (one all-reduce); ``flag`` itself without a process group."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def weighted_mean(values: Tensor, weight: float) -> Tensor:
    """``sum_r weight_r values_r / sum_r weight_r`` over the ranks, in one all-reduce.

    Args:
        values: [m] float tensor, same shape on every rank.
        weight: this rank's weight w_r >= 0 (e.g. its number of groups); the weights must not all be 0.
    Returns:
        [m] the weighted mean (identical on every rank); ``values`` itself without a process group.
    """
    if not is_distributed():
        return values
    flat = values.reshape(-1)
    buf = torch.cat([flat * weight, flat.new_tensor([weight])])  # [m + 1]: weighted values, then the weight
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    total = buf[-1]
    if not bool(total > 0):
        raise ValueError("weighted_mean: the weights of all ranks sum to 0")
    return (buf[:-1] / total).view_as(values)


def all_reduce_grads(params: Iterable[Tensor], weight: float) -> None:
    """Replace each parameter's gradient by the ``weight``-weighted mean of the ranks' gradients (one all-reduce).

    With ``weight`` = the rank's number of groups and each rank's loss a mean over its groups, the result is the
    gradient of the mean over all groups, i.e. that of the single-process loss. A parameter without a gradient counts
    as a zero gradient (and gets one), so every rank steps the same parameters. The reduction runs in float32 (the
    head's dtype) or the gradients' dtype if wider. No-op without a process group.

    Args:
        params: the trained parameters (the same list, in the same order, on every rank).
        weight: this rank's weight n_r > 0.
    """
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).to(dtype) for g in grads])  # [P]
    flat = weighted_mean(flat, weight)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).to(g.dtype).clone()
        offset += n


def all_gather_rows(x: Tensor) -> Tensor:
    """The ranks' ``x`` [n_r, ...] concatenated in rank order [sum_r n_r, ...]; ranks may hold different n_r.

    TRL hands rank r the r-th consecutive block of the rollout batch, so the result is the single-process batch in
    the single-process order. Detached (for statistics, not for gradients). ``x`` itself without a process group.
    """
    if not is_distributed():
        return x
    x = x.detach().contiguous()
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    width = int(max(int(s) for s in sizes))
    padded = x.new_zeros((width, *x.shape[1:]))
    padded[: x.shape[0]] = x
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[: int(s)] for o, s in zip(out, sizes, strict=True)])


def broadcast_params(params: Iterable[Tensor], src: int = 0) -> None:
    """Copy rank ``src``'s parameter values to every rank (in place), as DDP does at construction: the replicas
    start identical even if they were built differently. No-op without a process group."""
    if not is_distributed():
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=src)


def check_whole_groups(
    n_rows: int, k: int, prompt_ids: Sequence[Sequence[int]] | None = None, device: torch.device | str = "cpu"
) -> None:
    """Raise :class:`PartialGroupError` on every rank if any rank's rows are not whole groups of ``k``.

    A rank's rows are whole groups when their number is a multiple of ``k`` and, where the prompt tokens are given,
    every block of ``k`` consecutive rows shares one prompt. The verdict is all-reduced, so either every rank raises
    or none does (a rank that raised alone would leave the others waiting in the next collective). No-op without a
    process group.

    Args:
        n_rows: rows (completions) this rank holds, B_r.
        k: the group size K (``rl.num_generations``).
        prompt_ids: [B_r] the prompt tokens of each row, as the policy saw them (optional).
        device: where the one-element verdict tensor lives (CUDA under NCCL).
    """
    if not is_distributed():
        return
    ok = n_rows % k == 0 and n_rows > 0
    if ok and prompt_ids is not None:
        ok = len(prompt_ids) == n_rows and all(
            all(list(prompt_ids[j]) == list(prompt_ids[i]) for j in range(i + 1, i + k)) for i in range(0, n_rows, k)
        )
    verdict = torch.tensor([1 if ok else 0], device=device, dtype=torch.int32)
    dist.all_reduce(verdict, op=dist.ReduceOp.MIN)
    if int(verdict) == 0:
        raise PartialGroupError(
            f"R2M update on {world_size()} processes: a rank holds part of a group of K={k} completions (rank "
            f"{rank()} holds {n_rows}, {'whole groups' if ok else 'NOT whole groups'}). Every rank must hold whole "
            "groups, K consecutive completions of one prompt: set per_device_train_batch_size to a multiple of "
            "num_generations (the runner uses rl.prompts_per_step * rl.num_generations) with steps_per_generation = 1."
        )
