"""Pairwise judge backed by any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, llama.cpp, ...).

Each item is rendered with a :class:`~r2m.judges.templates.JudgeTemplate` and sent as one
``POST {base_url}/chat/completions`` request; the reply is parsed strictly: an unparseable (or truncated) reply is an
``"invalid"`` verdict carrying the raw text, never a guess. Requests run concurrently; 429 / 5xx / network errors are
retried with exponential backoff (a numeric ``Retry-After`` wins), anything else fails at once with a
:class:`JudgeAPIError` that says what to fix.
Replies are cached (:class:`~r2m.judges.cache.ReplyCache`) as soon as they arrive, so a rerun never pays twice.

The API key is read from the environment variable *named* ``api_key_env`` at request time; it is never stored on the
judge, logged, cached, or put into an error message (a server that echoes it back has it scrubbed).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from r2m.judges.base import Judge, PairwiseItem, Verdict
from r2m.judges.cache import ReplyCache, cache_key
from r2m.judges.templates import JudgeTemplate, load_template

if TYPE_CHECKING:
    from r2m.config import JudgeConfig

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 60.0  # a server's Retry-After is honoured up to this many seconds
_SNIPPET_CHARS = 300
_COUNTERS = (
    "requests",
    "retries",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "cached_prompt_tokens",
    "cached_completion_tokens",
    "timeouts",
)


class JudgeAPIError(RuntimeError):
    """The judge's API could not give a reply; the message names the endpoint, model, status, attempts and a hint.

    Attributes: ``url``, ``model``, ``status`` (``None`` for network errors), ``attempts``, ``body`` (a short,
    key-scrubbed snippet of the server's reply or of the network error).
    """

    def __init__(self, *, url: str, model: str, status: int | None, body: str, attempts: int, hint: str) -> None:
        self.url, self.model, self.status, self.body, self.attempts = url, model, status, body, attempts
        what = f"HTTP {status}" if status is not None else "no HTTP response"
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts ({attempts - 1} retries)"
        super().__init__(
            f"judge API request failed: POST {url} (model {model!r}) -> {what} after {tries}; "
            f"server said: {body or '<empty body>'}. Hint: {hint}"
        )


def _public_url(url: str) -> str:
    """``url`` without any ``user:password@`` part (safe to log)."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else url


def _scrub(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` (the API key) replaced by ``***``."""
    return text.replace(secret, "***") if secret else text


def _snippet(text: str, secret: str) -> str:
    """A one-line, bounded excerpt of ``text`` with ``secret`` (the API key) scrubbed out."""
    text = _scrub(text, secret)
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "..."


class AdaptiveLimit:
    """How many requests may be in flight: starts at ``ceiling`` (``judge.concurrency``), halves on every timeout
    (a slow server is still working on the request it abandoned: sending more only lengthens its queue) and grows
    back by one per success. ``acquire`` blocks while the limit is reached."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self.in_flight = 0
        self.lowest = ceiling
        self._cond = threading.Condition()

    def acquire(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    def release(self, timed_out: bool) -> None:
        with self._cond:
            self.in_flight -= 1
            if timed_out:
                self.limit = max(1, self.limit // 2)
                self.lowest = min(self.lowest, self.limit)
            else:
                self.limit = min(self.ceiling, self.limit + 1)
            self._cond.notify_all()


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """A numeric ``Retry-After`` header in seconds (capped), or ``None`` (absent, an HTTP date, or nonsense)."""
    value = (headers or {}).get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or not seconds >= 0:  # also rejects NaN
        return None
    return min(seconds, MAX_RETRY_AFTER_S)


class OpenAICompatibleJudge(Judge):
    """Pairwise judge that asks a chat model at an OpenAI-compatible endpoint (``kind: openai``).

    ``sleep`` is the function used to wait between retries (injectable so tests need not wait).
    """

    name = "openai"

    def __init__(
        self,
        *,
        template: JudgeTemplate,
        model: str,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        concurrency: int = 4,
        max_tokens: int = 128,
        temperature: float = 0.0,
        cache: ReplyCache | None = None,
        usd_per_1m_prompt_tokens: float = 0.0,
        usd_per_1m_completion_tokens: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0 or concurrency < 1 or max_tokens < 1:
            raise ValueError(
                "judge: need timeout_s > 0, max_retries >= 0, backoff_s >= 0, concurrency >= 1 and max_tokens >= 1; "
                f"got {timeout_s=}, {max_retries=}, {backoff_s=}, {concurrency=}, {max_tokens=}"
            )
        self.template = template
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.concurrency = int(concurrency)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.cache = cache
        self.usd_per_1m_prompt_tokens = float(usd_per_1m_prompt_tokens)
        self.usd_per_1m_completion_tokens = float(usd_per_1m_completion_tokens)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._limit = AdaptiveLimit(self.concurrency)  # halves on a timeout, grows back on successes
        self._ssl: ssl.SSLContext | None = None  # built once (it is the slow part of opening a client)

    @classmethod
    def from_config(cls, jc: JudgeConfig, workdir: str | Path = ".") -> OpenAICompatibleJudge:
        """The judge described by a :class:`~r2m.config.JudgeConfig`; its cache file is relative to ``workdir``."""
        return cls(
            template=load_template(jc.template),
            model=jc.model,
            base_url=jc.base_url,
            api_key_env=jc.api_key_env,
            timeout_s=jc.timeout_s,
            max_retries=jc.max_retries,
            backoff_s=jc.backoff_s,
            concurrency=jc.concurrency,
            max_tokens=jc.max_tokens,
            temperature=jc.temperature,
            cache=ReplyCache(Path(workdir) / jc.cache) if jc.cache else None,
            usd_per_1m_prompt_tokens=jc.usd_per_1m_prompt_tokens,
            usd_per_1m_completion_tokens=jc.usd_per_1m_completion_tokens,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, base_url={_public_url(self.base_url)!r}, "
            f"template={self.template.name!r}, api_key_env={self.api_key_env!r})"
        )

    @property
    def endpoint(self) -> str:
        """The chat-completions URL requests are sent to."""
        return f"{self.base_url.rstrip('/')}/chat/completions"

    def describe(self) -> dict[str, Any]:
        """Loggable parameters (for run params / reports); names the key's environment variable, never the key."""
        return {
            "kind": self.name,
            "model": self.model,
            "base_url": _public_url(self.base_url),
            "template": self.template.name,
            "template_digest": self.template.digest,
            "api_key_env": self.api_key_env,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "backoff_s": self.backoff_s,
            "concurrency": self.concurrency,
            "cache": str(self.cache.path) if self.cache is not None else "",
        }

    def usage(self) -> dict[str, Any]:
        """Counters so far: ``requests`` (successful API replies), ``retries``, ``cache_hits``, token counts of paid
        replies (``prompt_tokens``, ``completion_tokens``) and of cached ones (``cached_*``), ``timeouts`` and
        ``concurrency_lowest`` (the fewest requests in flight the timeouts led to: :class:`AdaptiveLimit`), and
        ``cost_usd`` of the paid replies at the configured per-1M-token prices (cached replies cost nothing)."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
        out["concurrency_lowest"] = self._limit.lowest  # where timeouts drove the requests in flight
        out["cost_usd"] = (
            out["prompt_tokens"] * self.usd_per_1m_prompt_tokens
            + out["completion_tokens"] * self.usd_per_1m_completion_tokens
        ) / 1e6
        return out

    def judge_one(self, item: PairwiseItem) -> Verdict:
        """Judge ``item`` as presented (one request, or a cache hit)."""
        return self.judge_batch([item])[0]

    def judge_batch(self, items: Sequence[PairwiseItem], progress: bool = False) -> list[Verdict]:
        """Judge ``items`` with up to ``concurrency`` requests in flight; verdicts come back in input order.

        On an API failure the requests not yet started are cancelled, those in flight finish (their replies are
        cached) and the first :class:`JudgeAPIError` is raised.
        """
        items = list(items)
        if not items:
            return []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc=f"judge[{self.name}]")
        requests = [self._payload(item) for item in items]
        distinct = {key: payload for key, payload in requests}  # the same request twice in a batch is sent once
        try:
            with self._client() as client, ThreadPoolExecutor(min(self.concurrency, len(distinct))) as pool:
                futures = {key: pool.submit(self._reply, client, key, payload) for key, payload in distinct.items()}
                self._wait_all(list(futures.values()), bar, weights=Counter(key for key, _ in requests))
        finally:
            if bar is not None:
                bar.close()
        return [self._verdict(item, futures[key].result()) for item, (key, _) in zip(items, requests, strict=True)]

    def _client(self) -> httpx.Client:
        """A fresh connection pool for one batch (closed after it, so a judge never holds idle sockets)."""
        with self._lock:
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()  # honours SSL_CERT_FILE / SSL_CERT_DIR like httpx's default
        return httpx.Client(timeout=self.timeout_s, verify=self._ssl)

    @staticmethod
    def _wait_all(futures: list[Future[dict[str, Any]]], bar: Any, weights: Counter) -> None:
        """Wait for every future (``weights``: the items each one answers, in submission order, for the bar); on
        the first failure cancel those not started and re-raise."""
        counts = dict(zip(futures, weights.values(), strict=True))
        try:
            for future in as_completed(futures):
                future.result()
                if bar is not None:
                    bar.update(counts[future])
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    def _payload(self, item: PairwiseItem) -> tuple[str, dict[str, Any]]:
        """``(cache key, request body)`` of ``item`` as presented."""
        messages = self.template.messages(item)
        params = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        key = cache_key(f"openai:{self.base_url}:{self.model}", messages, params)
        return key, {"model": self.model, "messages": messages, **params}

    def _reply(self, client: httpx.Client, key: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One reply record: from the cache when possible, else from the API (and then cached, once)."""
        record = self.cache.get(key) if self.cache is not None else None
        if record is not None:
            self._count(
                cache_hits=1,
                cached_prompt_tokens=int(record.get("prompt_tokens") or 0),
                cached_completion_tokens=int(record.get("completion_tokens") or 0),
            )
            return record
        record = self._request(client, payload)
        if self.cache is not None:
            self.cache.put(key, record)
        return record

    def _verdict(self, item: PairwiseItem, record: Mapping[str, Any]) -> Verdict:
        """Parse a reply record; an unparseable reply is ``"invalid"`` (noting truncation when the model hit
        ``max_tokens``)."""
        text = _scrub(str(record.get("text") or ""), self._key())  # also a record cached before scrubbing existed
        preferred, reason = self.template.parse(text)
        if preferred == "invalid" and record.get("finish_reason") == "length":
            reason = f"truncated (finish_reason=length, max_tokens={self.max_tokens}) before a verdict; {reason}"
        return Verdict(item_id=item.id, preferred=preferred, reason=reason, raw=text)

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                self._counts[name] += value

    def _key(self) -> str:
        return os.environ.get(self.api_key_env, "").strip()

    def _headers(self) -> dict[str, str]:
        key = self._key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _request(self, client: httpx.Client, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload``, retrying 429 / 5xx / network errors; returns the reply record or raises."""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            self._limit.acquire()
            timed_out = False
            try:
                response = client.post(self.endpoint, json=payload, headers=self._headers())
            except httpx.TimeoutException as exc:  # the server may still be working on it: back off, send fewer
                timed_out = True
                self._count(timeouts=1)
                status, body, headers = None, f"timed out after {self.timeout_s:g} s ({type(exc).__name__})", None
            except httpx.TransportError as exc:  # connection refused/reset, ...
                status, body, headers = None, f"{type(exc).__name__}: {exc}", None
            else:
                if response.is_success:
                    return self._record(response, attempt + 1)
                status, body, headers = response.status_code, response.text, response.headers
                if not _retryable(status):
                    raise self._error(status, body, attempt + 1)
            finally:
                self._limit.release(timed_out)
            if attempt == self.max_retries:
                break
            self._wait_before_retry(attempt, status, headers, timed_out)
        raise self._error(status, body, attempts)

    def _wait_before_retry(
        self, attempt: int, status: int | None, headers: Mapping[str, str] | None, timed_out: bool = False
    ) -> None:
        retry_after = _retry_after_s(headers)
        delay = retry_after if retry_after is not None else self.backoff_s * 2**attempt
        what = f"HTTP {status}" if status is not None else "network error"
        if timed_out:
            what = f"request timed out after {self.timeout_s:g} s (requests in flight now at most {self._limit.limit})"
        logger.warning(
            "judge API %s at %s (attempt %d/%d); retrying in %.2f s",
            what,
            _public_url(self.endpoint),
            attempt + 1,
            self.max_retries + 1,
            delay,
        )
        self._count(retries=1)
        self._sleep(delay)

    def _record(self, response: httpx.Response, attempts: int) -> dict[str, Any]:
        """The cacheable record of a successful reply; a malformed body is a server bug: :class:`JudgeAPIError`."""
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"]["content"]
            if text is not None and not isinstance(text, str):
                raise TypeError(f"message.content is {type(text).__name__}")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise self._error(
                response.status_code, f"malformed reply ({type(exc).__name__}: {exc}): {response.text}", attempts
            ) from None
        usage = data.get("usage") or {}
        record = {  # a server may echo the request back: the key never reaches the cache or the verdicts
            "text": _scrub(text or "", self._key()),
            "finish_reason": choice.get("finish_reason"),
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
        }
        self._count(requests=1, prompt_tokens=record["prompt_tokens"], completion_tokens=record["completion_tokens"])
        return record

    def _error(self, status: int | None, body: str, attempts: int) -> JudgeAPIError:
        return JudgeAPIError(
            url=_public_url(self.endpoint),
            model=self.model,
            status=status,
            body=_snippet(body, self._key()),
            attempts=attempts,
            hint=self._hint(status),
        )

    def _hint(self, status: int | None) -> str:
        """What to check for a given failure."""
        if status in (401, 403):
            return (
                f"check the key in ${self.api_key_env} (unset or empty: no Authorization header is sent) "
                f"and that it may use model {self.model!r}"
            )
        if status == 404:
            return (
                f"check judge.base_url ({_public_url(self.base_url)!r}; most servers want it to end in /v1) "
                f"and that model {self.model!r} is served there"
            )
        if status == 429:
            return "rate limited: lower judge.concurrency, or raise judge.max_retries / judge.backoff_s"
        if status is None:
            return "is the server running and reachable at judge.base_url? Consider raising judge.timeout_s"
        if status >= 500:
            return "the server kept failing; check its logs, or raise judge.max_retries / judge.backoff_s"
        if 200 <= status < 300:
            return "the server's reply is not in the OpenAI chat-completions format (no choices[0].message.content)"
        return "check the request parameters (judge.model, judge.max_tokens, judge.temperature) against the server"
