"""The OpenAI-compatible judge under load: judge.concurrency=16 against a real local server that answers 4 requests
at a time, with injected 429s and requests that stall past the client's timeout. Every verdict is requested and
cached exactly once, the server never has more than the ceiling in flight, and timeouts make the client send fewer
requests instead of piling retries onto a server still working on the ones it abandoned."""

from __future__ import annotations

import threading
import time
from typing import Any

from r2m.judges.base import PairwiseItem
from r2m.judges.cache import ReplyCache
from tests.helpers.fake_openai import Reply, fake_openai_server
from tests.unit.test_openai_judge import LONG, POST, SHORT, make_judge

N_ITEMS = 48  # x 2 orders = 96 distinct requests, plus 8 duplicates of the first items
STALLED = (22, 23, 24, 25)  # arrival indices that hang past the client's timeout
TIMEOUT_S = 1.0


class SlowServer:
    """A responder that works on 4 requests at a time (the rest queue), answers every 7th arrival with a 429 and
    hangs the STALLED arrivals for 3x the client's timeout; it records how many requests it held at once."""

    def __init__(self) -> None:
        self.workers = threading.Semaphore(4)
        self.lock = threading.Lock()
        self.arrivals = 0
        self.held = 0
        self.peak_held = 0
        self.held_while_stalled: list[int] = []  # requests held at each arrival while a stalled one is still held
        self.stalled_open = 0
        self.ok = 0

    def __call__(self, body: dict[str, Any]) -> Reply:
        with self.lock:
            n = self.arrivals
            self.arrivals += 1
            self.held += 1
            self.peak_held = max(self.peak_held, self.held)
            if self.stalled_open:
                self.held_while_stalled.append(self.held)
        try:
            if n % 7 == 6:
                return Reply(429, "rate limited", headers={"Retry-After": "0"})
            if n in STALLED:
                with self.lock:
                    self.stalled_open += 1
                time.sleep(3 * TIMEOUT_S)  # the client gave up on it; the server is still busy with it
                with self.lock:
                    self.stalled_open -= 1
                return Reply(200, "Comparison: late.\nPreferred: A")
            with self.workers:
                time.sleep(0.01)
            with self.lock:
                self.ok += 1
            return Reply(200, "Comparison: ok.\nPreferred: A")
        finally:
            with self.lock:
                self.held -= 1


def test_concurrency_16_with_429s_and_timeouts_caches_every_verdict_once(tmp_path):
    slow = SlowServer()
    items = [PairwiseItem(id=str(i), prompt=f"{POST} ({i})", response_a=LONG, response_b=SHORT) for i in range(N_ITEMS)]
    items += items[:8]  # the same pairs again in one batch: served by the same request, not a second one
    cache = ReplyCache(tmp_path / "cache.sqlite")
    with fake_openai_server(slow) as server:
        judge = make_judge(
            server.base_url, cache=cache, concurrency=16, timeout_s=TIMEOUT_S, max_retries=4, backoff_s=0.05
        )
        judge.sleep = time.sleep  # real waits: the server's queue must drain while the client backs off
        t0 = time.perf_counter()
        verdicts = judge.judge(items, both_orders=True)
        seconds = time.perf_counter() - t0
        n_requests = len(server.requests)
        # a rerun is served from the cache: no request at all
        again = make_judge(server.base_url, cache=cache, concurrency=16, timeout_s=TIMEOUT_S)
        assert [v.preferred for v in again.judge(items, both_orders=True)] == [v.preferred for v in verdicts]
        assert len(server.requests) == n_requests
        # let the server finish the requests the client abandoned before it stops: no thread of this test may
        # outlive it (CPython 3.11's AST validation is not thread-safe: a later test's ast.parse can fail)
        deadline = time.monotonic() + 10 * TIMEOUT_S
        while slow.held and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow.held == 0
        time.sleep(0.2)  # and write their (unread) replies
    usage = judge.usage()
    unique = 2 * N_ITEMS
    assert len(verdicts) == len(items) and all(v.preferred != "invalid" for v in verdicts)
    assert len(cache) == unique  # one entry per distinct request
    assert usage["requests"] == unique  # one accepted reply per distinct request
    assert slow.ok >= unique  # (the late answers to abandoned requests are dropped, never cached twice)
    # the stalled requests time out (a loaded machine may add a few more) and the client sends fewer at once
    assert usage["timeouts"] >= len(STALLED) and usage["concurrency_lowest"] <= 4
    assert n_requests == unique + usage["retries"]  # nothing sent beyond the retries the counters show
    assert slow.peak_held <= 16 + len(STALLED)  # the ceiling holds; only abandoned requests linger beyond it
    # while the stalled requests were still being worked on, the client kept fewer requests at the server
    assert slow.held_while_stalled and max(slow.held_while_stalled[-10:]) <= 16
    print(f"{unique} verdicts in {seconds:.2f} s ({unique / seconds:.1f}/s), {usage['retries']} retries")
