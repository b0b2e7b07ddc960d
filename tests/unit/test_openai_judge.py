"""The OpenAI-compatible judge against a real local HTTP server (tests/helpers/fake_openai.py); httpx is not mocked."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from r2m.config import JudgeConfig
from r2m.judges.base import PairwiseItem
from r2m.judges.cache import ReplyCache
from r2m.judges.openai_compat import JudgeAPIError, OpenAICompatibleJudge
from r2m.judges.templates import load_template
from tests.helpers.fake_openai import FakeOpenAIServer, Reply, fake_openai_server

SECRET = "sk-test-SECRET-0123456789abcdef"
KEY_ENV = "R2M_TEST_JUDGE_KEY"
POST = "My landlord raised the rent by 40% overnight and refuses to fix the heating. What can I do?"
SHORT = "Landlord raised rent, won't fix heating."
LONG = "Landlord raised rent 40% overnight and refuses heating repairs; the poster asks about their options."
_SUMMARIES = re.compile(r"Summary A:\n(.*?)\n\nSummary B:\n(.*?)\n\nFIRST", re.DOTALL)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with fake_openai_server() as s:
        yield s


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


class SleepRecorder:
    """Injected ``sleep``: records the requested delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.delays.append(seconds)


def make_judge(base_url: str, template: str = "tldr", **overrides: Any) -> OpenAICompatibleJudge:
    kwargs: dict[str, Any] = dict(
        template=load_template(template),
        model="judge-model",
        base_url=base_url,
        api_key_env=KEY_ENV,
        timeout_s=5.0,
        max_retries=3,
        backoff_s=0.25,
        concurrency=4,
        sleep=SleepRecorder(),
    )
    kwargs.update(overrides)
    return OpenAICompatibleJudge(**kwargs)


def item(i: str = "1", a: str = LONG, b: str = SHORT) -> PairwiseItem:
    return PairwiseItem(id=i, prompt=POST, response_a=a, response_b=b)


def distinct(i: str = "1", a: str = LONG, b: str = SHORT) -> PairwiseItem:
    """An item whose request differs from every other id's (the same request twice in a batch is sent once)."""
    return PairwiseItem(id=i, prompt=f"{POST} (post {i})", response_a=a, response_b=b)


def summaries(request_json: dict[str, Any]) -> tuple[str, str]:
    """(summary A, summary B) as rendered into a TL;DR request."""
    m = _SUMMARIES.search(request_json["messages"][-1]["content"])
    assert m, request_json
    return m.group(1), m.group(2)


def prefer_longer(request_json: dict[str, Any]) -> tuple[int, str]:
    a, b = summaries(request_json)
    return 200, f"Comparison: the longer one covers more.\nPreferred: {'A' if len(a) >= len(b) else 'B'}"


# --- the request ------------------------------------------------------------------------------------------------


def test_request_carries_model_template_and_both_summaries(server: FakeOpenAIServer) -> None:
    judge = make_judge(server.base_url, max_tokens=64, temperature=0.0)
    [verdict] = judge.judge([item()], both_orders=False)
    assert verdict.preferred == "A" and verdict.reason == "A is better."
    [req] = server.requests
    assert req.method == "POST" and req.path == "/v1/chat/completions"
    body = req.json
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("judge-model", 64, 0.0)
    [message] = body["messages"]  # the TL;DR template has no system message
    assert message["role"] == "user"
    content = message["content"]
    assert "Which of the following summaries does a better job of summarizing" in content
    assert f"Post:\n{POST}" in content and summaries(body) == (LONG, SHORT)
    assert "{prompt}" not in content and "{response_a}" not in content
    assert "authorization" not in req.headers  # no key in the environment: no header (local servers)


def test_alpaca_eval_template_sends_a_system_message(server: FakeOpenAIServer) -> None:
    judge = make_judge(server.base_url, template="alpaca_eval")
    judge.judge_one(PairwiseItem("d", "Name a prime number.", "7", "8"))
    system, user = server.requests[0].json["messages"]
    assert system["role"] == "system" and "ranks models by the quality of their answers" in system["content"]
    assert user["role"] == "user" and "Instruction:\nName a prime number." in user["content"]
    assert "Output of model A:\n7" in user["content"] and "Output of model B:\n8" in user["content"]


def test_base_url_trailing_slash_is_tolerated(server: FakeOpenAIServer) -> None:
    make_judge(server.base_url + "/").judge_one(item())
    assert server.requests[0].path == "/v1/chat/completions"


# --- both orders ------------------------------------------------------------------------------------------------


def test_both_orders_send_two_requests_per_item_second_swapped(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: (200, "Comparison: first is fine.\nPreferred: A")  # pure position bias
    items = [item("1", LONG, SHORT), item("2", "x summary", "y summary")]
    verdicts = make_judge(server.base_url, concurrency=1).judge(items)
    sent = [summaries(r.json) for r in server.requests]
    assert sent == [(LONG, SHORT), ("x summary", "y summary"), (SHORT, LONG), ("y summary", "x summary")]
    assert [(v.item_id, v.preferred, v.consistent) for v in verdicts] == [("1", "tie", False), ("2", "tie", False)]
    assert verdicts[0].raw.startswith("[AB] Comparison") and "\n[BA] Comparison" in verdicts[0].raw


def test_the_same_request_twice_in_a_batch_is_sent_once(server: FakeOpenAIServer) -> None:
    judge = make_judge(server.base_url, concurrency=4)
    verdicts = judge.judge_batch([item("1"), distinct("2"), item("3"), item("4")])
    assert len(server.requests) == 2 and judge.usage()["requests"] == 2
    assert [v.item_id for v in verdicts] == ["1", "2", "3", "4"] and {v.preferred for v in verdicts} == {"A"}


def test_a_content_based_judge_gives_consistent_winners_in_input_order(server: FakeOpenAIServer) -> None:
    server.responder = prefer_longer
    items = [distinct(str(i), LONG, SHORT) if i % 2 else distinct(str(i), SHORT, LONG) for i in range(6)]
    verdicts = make_judge(server.base_url, concurrency=4).judge(items)
    assert len(server.requests) == 12
    assert [v.item_id for v in verdicts] == [str(i) for i in range(6)]
    assert [v.preferred for v in verdicts] == ["B", "A", "B", "A", "B", "A"]
    assert all(v.consistent is True for v in verdicts)


# --- parsing ----------------------------------------------------------------------------------------------------


def test_good_bad_and_truncated_replies(server: FakeOpenAIServer) -> None:
    truncated = "Comparison: Summary A captures the rent increase but Summary B is shorter and"
    server.script(
        Reply(text="Comparison: B is tighter.\n**Preferred:** Summary B."),
        Reply(text="I like both"),
        Reply(text=truncated, finish_reason="length"),
        Reply(text="Comparison: A.\nPreferred: A", finish_reason="length"),  # cut after the verdict: still usable
    )
    judge = make_judge(server.base_url, concurrency=1, max_tokens=16)
    good, bad, cut, late_cut = judge.judge_batch([distinct(str(i)) for i in range(4)])
    assert (good.preferred, good.reason) == ("B", "B is tighter.")
    assert bad.preferred == "invalid" and bad.raw == "I like both" and "unparseable" in bad.reason
    assert cut.preferred == "invalid" and cut.raw == truncated
    assert "truncated" in cut.reason and "max_tokens=16" in cut.reason
    assert late_cut.preferred == "A"


def test_invalid_in_one_order_makes_the_item_invalid(server: FakeOpenAIServer) -> None:
    server.script(Reply(text="Preferred: A"), Reply(text="Preferred: A or B"))
    [verdict] = make_judge(server.base_url, concurrency=1).judge([item()])
    assert verdict.preferred == "invalid" and verdict.consistent is None and "Preferred: A or B" in verdict.raw


# --- retries and errors -----------------------------------------------------------------------------------------


def test_429_is_retried_with_exponential_backoff(server: FakeOpenAIServer) -> None:
    server.script(Reply(429, "slow down"), Reply(429, "slow down"))
    judge = make_judge(server.base_url, backoff_s=0.25)
    assert judge.judge_one(item()).preferred == "A"
    assert judge._sleep.delays == [0.25, 0.5]  # type: ignore[attr-defined]
    assert len(server.requests) == 3
    assert judge.usage()["requests"] == 1 and judge.usage()["retries"] == 2


def test_retry_after_is_honoured_and_capped(server: FakeOpenAIServer) -> None:
    server.script(
        Reply(429, "busy", headers={"Retry-After": "3"}),
        Reply(503, "overloaded", headers={"Retry-After": "1000"}),  # capped at 60 s
        Reply(429, "busy", headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),  # a date: exponential
    )
    judge = make_judge(server.base_url, backoff_s=0.25)
    assert judge.judge_one(item()).preferred == "A"
    assert judge._sleep.delays == [3.0, 60.0, 1.0]  # type: ignore[attr-defined]


def test_repeated_500_raises_a_clear_error(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.responder = lambda body: (500, "upstream exploded")
    judge = make_judge(server.base_url, max_retries=2)
    with pytest.raises(JudgeAPIError) as info:
        judge.judge_one(item())
    message = str(info.value)
    assert "HTTP 500" in message and f"{server.base_url}/chat/completions" in message
    assert "3 attempts" in message and "'judge-model'" in message and "upstream exploded" in message
    assert (info.value.status, info.value.attempts) == (500, 3)
    assert len(server.requests) == 3 and judge._sleep.delays == [0.25, 0.5]  # type: ignore[attr-defined]
    assert SECRET not in message


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_fail_at_once_naming_the_env_var(server: FakeOpenAIServer, status: int) -> None:
    server.responder = lambda body: (status, "Incorrect API key provided")
    judge = make_judge(server.base_url)
    with pytest.raises(JudgeAPIError, match=rf"HTTP {status} after 1 attempt;.*\${KEY_ENV}"):
        judge.judge_one(item())
    assert len(server.requests) == 1 and judge._sleep.delays == []  # type: ignore[attr-defined]


def test_wrong_base_url_404_hints_at_base_url_and_model(server: FakeOpenAIServer) -> None:
    judge = make_judge(server.base_url.removesuffix("/v1"))
    with pytest.raises(JudgeAPIError, match=r"HTTP 404.*judge\.base_url.*'judge-model'"):
        judge.judge_one(item())
    assert [r.path for r in server.requests] == ["/chat/completions"]


@pytest.mark.parametrize("body", [{"object": "chat.completion", "choices": []}, {"choices": [{}]}, "<html>oops</html>"])
def test_malformed_success_body_is_an_api_error(server: FakeOpenAIServer, body: Any) -> None:
    server.responder = lambda request_json: Reply(body=body)
    with pytest.raises(JudgeAPIError, match=r"HTTP 200.*malformed reply"):
        make_judge(server.base_url).judge_one(item())
    assert len(server.requests) == 1


def test_network_errors_are_retried_then_reported() -> None:
    with socket.socket() as s:  # a port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = make_judge(f"http://127.0.0.1:{port}/v1", max_retries=2, backoff_s=0.01)
    with pytest.raises(JudgeAPIError, match=r"no HTTP response after 3 attempts.*ConnectError.*server running"):
        judge.judge_one(item())
    assert judge._sleep.delays == [0.01, 0.02] and judge.usage()["retries"] == 2  # type: ignore[attr-defined]


def test_a_read_timeout_is_retried(server: FakeOpenAIServer) -> None:
    calls = []

    def slow_first(request_json: dict[str, Any]) -> tuple[int, str]:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.6)
        return 200, "Preferred: B"

    server.responder = slow_first
    judge = make_judge(server.base_url, timeout_s=0.2)
    assert judge.judge_one(item()).preferred == "B"
    assert judge.usage()["retries"] == 1 and len(server.requests) == 2


# --- cache, usage, cost -----------------------------------------------------------------------------------------


def test_rerun_is_served_from_the_cache(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = prefer_longer
    items = [item("1", LONG, SHORT), item("2", "a short one", "a much longer summary")]
    first = make_judge(server.base_url, cache=ReplyCache(tmp_path / "cache.sqlite"))
    verdicts = first.judge(items)
    assert len(server.requests) == 4
    paid = first.usage()
    assert paid["cache_hits"] == 0 and paid["requests"] == 4 and paid["prompt_tokens"] > 0

    second = make_judge(server.base_url, cache=ReplyCache(tmp_path / "cache.sqlite"))
    assert second.judge(items) == verdicts
    assert len(server.requests) == 4  # not one more HTTP request
    usage = second.usage()
    assert (usage["cache_hits"], usage["requests"], usage["prompt_tokens"], usage["cost_usd"]) == (4, 0, 0, 0.0)
    assert usage["cached_prompt_tokens"] == paid["prompt_tokens"]
    assert usage["cached_completion_tokens"] == paid["completion_tokens"]


def test_cache_key_depends_on_model_and_decoding(server: FakeOpenAIServer, tmp_path: Path) -> None:
    cache = ReplyCache(tmp_path / "cache.sqlite")
    make_judge(server.base_url, cache=cache).judge_one(item())
    make_judge(server.base_url, cache=cache, model="other-model").judge_one(item())
    make_judge(server.base_url, cache=cache, max_tokens=7).judge_one(item())
    assert len(server.requests) == 3 and len(cache) == 3


def test_replies_paid_for_are_cached_before_a_later_failure(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.script(Reply(text="Preferred: A"), Reply(401, "bad key"))
    cache = ReplyCache(tmp_path / "cache.sqlite")
    with pytest.raises(JudgeAPIError):
        make_judge(server.base_url, cache=cache, concurrency=1).judge_batch([item("1"), item("2", "c", "d")])
    assert len(cache) == 1
    assert make_judge(server.base_url, cache=cache).judge_one(item("1")).preferred == "A"
    assert len(server.requests) == 2


def test_tokens_and_cost_come_from_the_usage_field(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: Reply(text="Preferred: A", usage={"prompt_tokens": 1000, "completion_tokens": 50})
    judge = make_judge(server.base_url, usd_per_1m_prompt_tokens=2.5, usd_per_1m_completion_tokens=10.0)
    judge.judge([distinct("1"), distinct("2")], both_orders=False)
    judge.judge_one(distinct("3"))
    usage = judge.usage()
    assert (usage["requests"], usage["prompt_tokens"], usage["completion_tokens"]) == (3, 3000, 150)
    assert usage["cost_usd"] == pytest.approx(3000 * 2.5e-6 + 150 * 10e-6)


def test_missing_usage_field_counts_zero_tokens(server: FakeOpenAIServer) -> None:
    body = {"choices": [{"message": {"role": "assistant", "content": "Preferred: B"}, "finish_reason": "stop"}]}
    server.responder = lambda request_json: Reply(body=body)
    judge = make_judge(server.base_url, usd_per_1m_prompt_tokens=1.0)
    assert judge.judge_one(item()).preferred == "B"
    assert (judge.usage()["requests"], judge.usage()["prompt_tokens"], judge.usage()["cost_usd"]) == (1, 0, 0.0)


# --- the key ----------------------------------------------------------------------------------------------------


def test_authorization_header_carries_the_key_from_the_env_var(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    judge = make_judge(server.base_url)
    monkeypatch.setenv(KEY_ENV, SECRET)  # read at request time, not at construction
    judge.judge_one(item())
    assert server.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
    monkeypatch.setenv(KEY_ENV, "")
    judge.judge_one(item("2"))
    assert "authorization" not in server.requests[-1].headers


def test_the_key_never_leaks(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, SECRET)
    cache_path = tmp_path / "cache.sqlite"
    judge = make_judge(server.base_url, cache=ReplyCache(cache_path), concurrency=1)
    server.script(Reply(429, "busy"), Reply(500, "oops"))
    judge.judge([item("1"), item("2")])

    def echo_headers(request_json: dict[str, Any]) -> tuple[int, str]:
        return 401, f"Incorrect API key provided: {server.requests[-1].headers.get('authorization')}"

    server.responder = echo_headers  # a server that echoes the key back: it must be scrubbed
    with pytest.raises(JudgeAPIError) as auth_error:
        judge.judge_one(item("3", "new", "pair"))
    server.responder = lambda body: (502, "bad gateway")
    with pytest.raises(JudgeAPIError) as server_error:
        judge.judge_one(item("4", "another", "pair"))

    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"  # it was sent...
    assert "***" in str(auth_error.value)
    surfaces = {
        "auth error": str(auth_error.value) + repr(auth_error.value.args) + auth_error.value.body,
        "server error": str(server_error.value),
        "logs": caplog.text + "".join(repr(r.__dict__) for r in caplog.records),
        "describe": repr(judge.describe()),
        "usage": repr(judge.usage()),
        "repr": repr(judge) + str(judge),
        "attributes": repr(vars(judge)),
        "cache file": cache_path.read_bytes().decode("latin-1"),
    }
    assert any("retrying" in r.getMessage() for r in caplog.records)
    for where, text in surfaces.items():
        assert SECRET not in text, f"the API key leaked into {where}"
    assert judge.describe()["api_key_env"] == KEY_ENV


def test_a_key_echoed_in_a_successful_reply_is_never_stored(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    cache_path = tmp_path / "cache.sqlite"
    judge = make_judge(server.base_url, cache=ReplyCache(cache_path), concurrency=1)
    # a debugging proxy that echoes the request's headers into the reply, then answers
    auth = lambda: server.requests[-1].headers.get("authorization")  # noqa: E731
    server.responder = lambda body: (200, f"Comparison: headers {auth()} key={SECRET}\nPreferred: A")
    verdicts = judge.judge([item("1"), item("2")], both_orders=True)
    assert len(verdicts) == 2 and all(SECRET not in v.raw + v.reason and "***" in v.raw for v in verdicts)
    assert SECRET.encode() not in cache_path.read_bytes()
    # a cache written before the scrubbing existed (holding the key) is scrubbed on the way out too
    again = make_judge(server.base_url, cache=ReplyCache(cache_path), concurrency=1)
    keys = [row[0] for row in again.cache._db.execute("SELECT key FROM replies")]
    assert len(keys) == 2  # the two items are the same pair: one reply per order
    for key in keys:
        record = again.cache.get(key)
        again.cache.put(key, {**record, "text": record["text"].replace("***", SECRET)})
    assert SECRET.encode() in cache_path.read_bytes()
    n = len(server.requests)
    assert all(SECRET not in v.raw + v.reason for v in again.judge([item("1"), item("2")], both_orders=True))
    assert len(server.requests) == n  # served from the cache


# --- construction -----------------------------------------------------------------------------------------------


def test_from_config(server: FakeOpenAIServer, tmp_path: Path) -> None:
    jc = JudgeConfig(
        kind="openai",
        template="alpaca_eval",
        model="cfg-model",
        base_url=server.base_url,
        api_key_env=KEY_ENV,
        max_tokens=32,
        cache="judge/cache.sqlite",
    )
    judge = OpenAICompatibleJudge.from_config(jc, workdir=tmp_path)
    assert judge.cache is not None and judge.cache.path == tmp_path / "judge" / "cache.sqlite"
    described = judge.describe()
    assert (described["kind"], described["model"], described["template"]) == ("openai", "cfg-model", "alpaca_eval")
    assert described["template_digest"] == load_template("alpaca_eval").digest
    assert judge.judge_one(item()).preferred == "A"
    assert server.requests[0].json["model"] == "cfg-model" and server.requests[0].json["max_tokens"] == 32
    assert len(judge.cache) == 1
    jc.cache = ""
    assert OpenAICompatibleJudge.from_config(jc, workdir=tmp_path).cache is None


def test_empty_batch_progress_and_validation(server: FakeOpenAIServer) -> None:
    judge = make_judge(server.base_url)
    assert judge.judge_batch([]) == [] and server.requests == []
    assert [v.preferred for v in judge.judge([item("1"), item("2")], progress=True)] == ["tie", "tie"]
    with pytest.raises(ValueError, match="concurrency"):
        make_judge(server.base_url, concurrency=0)


# --- a slow server ----------------------------------------------------------------------------------------------


def test_adaptive_limit_halves_on_timeouts_and_grows_back():
    from r2m.judges.openai_compat import AdaptiveLimit

    limit = AdaptiveLimit(16)
    for _ in range(3):
        limit.acquire()
    limit.release(timed_out=True)
    limit.release(timed_out=True)
    assert limit.limit == 4 and limit.in_flight == 1
    limit.release(timed_out=False)
    assert limit.limit == 5 and limit.lowest == 4 and limit.in_flight == 0


def test_a_slow_server_gets_fewer_requests_and_every_verdict_is_cached_once(
    server: FakeOpenAIServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lock, seen = threading.Lock(), {"n": 0}

    def slow_at_first(request_json: dict[str, Any]) -> tuple[int, str]:
        with lock:
            seen["n"] += 1
            k = seen["n"]
        if k <= 6:  # the first requests take longer than the client waits
            time.sleep(1.0)
        return 200, "Comparison: ok\nPreferred: A"

    server.responder = slow_at_first
    cache = ReplyCache(tmp_path / "cache.sqlite")
    judge = make_judge(server.base_url, cache=cache, concurrency=16, timeout_s=0.3, max_retries=6, backoff_s=0.0)
    items = [item(str(i), f"summary a{i}", f"summary b{i}") for i in range(24)]
    with caplog.at_level(logging.WARNING):
        verdicts = judge.judge_batch(items)
    assert [v.preferred for v in verdicts] == ["A"] * 24
    usage = judge.usage()
    assert usage["timeouts"] >= 1 and usage["concurrency_lowest"] < 16 and usage["requests"] == 24
    assert len(cache) == 24  # each verdict cached exactly once
    assert "timed out after 0.3 s" in caplog.text and "network error" not in caplog.text


def test_a_server_that_never_answers_in_time_is_named_as_such(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: time.sleep(1.0) or (200, "Preferred: A")
    judge = make_judge(server.base_url, timeout_s=0.2, max_retries=1, backoff_s=0.0)
    with pytest.raises(JudgeAPIError, match=r"timed out after 0.2 s"):
        judge.judge_one(item())
