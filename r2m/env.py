"""Process settings (docs/reproducibility.md): offline-safe, no telemetry, slow-machine timeouts,
and pinned CPU numerics so that the same seed and thread count give the same bytes on any x86-64 machine with AVX2
(docs/reproducibility.md).

The numerics pins must be in the environment before torch runs its first operation: ATen picks its vectorised
kernels (AVX2 vs AVX-512) at the first dispatch and MKL its code path at its first call, both by CPU. Every entry
point (``python -m tasks``, the ``r2m`` command, the Prefect flow, the tests) calls :func:`set_offline_env` at import
time, before any tensor exists.
"""

from __future__ import annotations

import os
import platform

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "TOKENIZERS_PARALLELISM": "false",
}
# The same kernels on every CPU: ATen's AVX2 kernels (not AVX-512 where the CPU has it), MKL's conditional numerical
# reproducibility on its AVX2 branch, oneDNN capped at AVX2; cuBLAS's deterministic workspace on GPUs.
NUMERICS_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
}


def set_offline_env() -> None:
    """Set the offline defaults and the numerics pins unless the user set them (a user with a hub sets
    ``HF_HUB_OFFLINE=0``; ``ATEN_CPU_CAPABILITY=default`` etc. restore per-CPU kernels at the cost of bitwise
    reproducibility across machines)."""
    for k, v in {**OFFLINE_ENV, **NUMERICS_ENV}.items():
        os.environ.setdefault(k, v)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for the record of where a run ran."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numerics_info() -> dict[str, str | int]:
    """What decides the bits of a run on this machine: torch version, the kernels ATen dispatches to, the pins in
    force, threads, CPU. Written beside the timings (never into the reproducible outputs)."""
    import torch

    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        **{k: os.environ.get(k, "") for k in NUMERICS_ENV},
        "cpu": cpu_model(),
        "cuda": torch.version.cuda or "",
    }
