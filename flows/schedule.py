"""``r2m schedule``: serve one of the R2M flows on cron / interval schedules, against a running Prefect server.

Schedules are kept by the Prefect server's scheduler; on the ephemeral in-process server Prefect falls back to when
``PREFECT_API_URL`` is unset nothing would ever fire, so :func:`require_server` refuses that case with one line.
"""

from __future__ import annotations

from typing import Any

import httpx

ENQUEUE = "ENQUEUE"


class NoServerError(RuntimeError):
    """No Prefect server to schedule on (``PREFECT_API_URL`` unset, or nothing answers there)."""


def require_server(url: str | None = None, timeout_s: float = 5.0) -> str:
    """The API URL of a running Prefect server: ``url``, else the ``PREFECT_API_URL`` setting.

    Raises:
        NoServerError: the URL is unset (Prefect would use an ephemeral server, where schedules never run) or its
            ``/health`` endpoint does not answer 200.
    """
    if url is None:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
    hint = "start one with `prefect server start --host 127.0.0.1` and export PREFECT_API_URL=http://127.0.0.1:4200/api"
    if not url:
        raise NoServerError(
            f"PREFECT_API_URL is unset, so Prefect would use an ephemeral server where schedules never run; {hint}"
        )
    try:
        r = httpx.get(url.rstrip("/") + "/health", timeout=timeout_s)
    except httpx.HTTPError as e:
        raise NoServerError(
            f"no Prefect server answers at PREFECT_API_URL={url} ({type(e).__name__}); {hint}"
        ) from None
    if r.status_code != 200:
        raise NoServerError(f"PREFECT_API_URL={url}/health answered {r.status_code}, not 200; {hint}")
    return url


def serve_kwargs(
    name: str, cron: tuple[str, ...], interval_s: tuple[float, ...], limit: int, parameters: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments of ``Flow.serve`` for these schedules: at most ``limit`` concurrent runs of the
    deployment, a run that comes due while ``limit`` are running waiting for one to end (ENQUEUE).

    Raises:
        ValueError: no schedule, or ``limit`` < 1.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.schedules import Cron, Interval

    if not cron and not interval_s:
        raise ValueError("give at least one schedule: --cron EXPR or --interval SECONDS")
    if limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    schedules = [Cron(c, timezone="UTC") for c in cron] + [Interval(s) for s in interval_s]
    return {
        "name": name,
        "schedules": schedules,
        "parameters": parameters,
        "global_limit": ConcurrencyLimitConfig(limit=limit, collision_strategy=ENQUEUE),
    }
