"""A real, scriptable HTTP server speaking the OpenAI chat-completions format, for judge tests (no mocking of httpx).

Usage::

    from tests.helpers.fake_openai import Reply, fake_openai_server

    with fake_openai_server() as server:                      # 127.0.0.1, a free port, a daemon thread
        server.responder = lambda body: (200, "Comparison: ok\\nPreferred: A", "stop", {})
        server.script(Reply(status=429, headers={"Retry-After": "2"}))   # answered first, then the responder
        judge = OpenAICompatibleJudge(template=..., model="m", base_url=server.base_url)
        ...
        server.requests[0].json["messages"], server.requests[0].headers["authorization"]

A responder is ``(request_json) -> reply``; a reply (from the responder or the script) is either a :class:`Reply` or a
tuple ``(status, text[, finish_reason[, headers]])``. A 200 reply becomes a ``chat.completion`` body with ``text`` as
the assistant message; any other status becomes an OpenAI-style ``{"error": {"message": text}}`` body.
``Reply(body=...)`` sends that body verbatim instead (a dict as JSON, a str as is), e.g. to test malformed replies.
Each request is recorded as :class:`RecordedRequest` (path, lower-cased header names, parsed JSON body). Only
``/v1/chat/completions`` is routed; any other path gets a 404 (as a real server would for a wrong ``base_url``).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_TEXT = "Comparison: A is better.\nPreferred: A"
CHAT_PATH = "/v1/chat/completions"  # other paths get a 404 (recorded, the script untouched)


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``usage=None`` reports word counts of the messages and of ``text`` as token counts."""

    status: int = 200
    text: str = DEFAULT_TEXT
    finish_reason: str = "stop"
    headers: Mapping[str, str] = field(default_factory=dict)
    usage: Mapping[str, int] | None = None
    body: dict[str, Any] | str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received: ``headers`` has lower-cased names; ``json`` is ``None`` if the body was not
    JSON."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any


ReplyLike = Reply | tuple[Any, ...]
Responder = Callable[[Any], ReplyLike]


def as_reply(value: ReplyLike) -> Reply:
    """Normalise a responder's return value (a :class:`Reply` or ``(status, text[, finish_reason[, headers]])``)."""
    if isinstance(value, Reply):
        return value
    status, text, *rest = value
    finish_reason = rest[0] if rest else "stop"
    headers = rest[1] if len(rest) > 1 and rest[1] is not None else {}
    return Reply(status=int(status), text=text, finish_reason=finish_reason, headers=headers)


def _word_count(request_json: Any) -> int:
    messages = request_json.get("messages", []) if isinstance(request_json, dict) else []
    return sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))


def completion_body(reply: Reply, request_json: Any) -> dict[str, Any]:
    """The JSON body for ``reply``: a ``chat.completion`` object, or an OpenAI-style error object."""
    if reply.status != 200:
        return {"error": {"message": reply.text, "type": "fake_error", "code": reply.status}}
    if reply.usage is not None:
        usage = dict(reply.usage)
    else:
        usage = {"prompt_tokens": _word_count(request_json), "completion_tokens": len(reply.text.split())}
    usage.setdefault("total_tokens", usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
    model = request_json.get("model", "fake") if isinstance(request_json, dict) else "fake"
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": usage,
    }


class FakeOpenAIServer:
    """State of a running fake server: ``base_url`` (``http://127.0.0.1:PORT/v1``), ``requests``, ``responder``."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or (lambda request_json: Reply())
        self.requests: list[RecordedRequest] = []
        self._script: deque[ReplyLike] = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        # stop() joins every request thread (a request the client gave up on finishes first): no thread of a test
        # outlives it (CPython 3.11's AST validation is not thread-safe, so a stray thread can fail a later test)
        self._httpd.daemon_threads = False
        self._httpd.block_on_close = True
        self.port: int = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )

    def script(self, *replies: ReplyLike) -> None:
        """Queue replies that are sent, in order, before the responder is consulted again."""
        with self._lock:
            self._script.extend(replies)

    def reply_for(self, request: RecordedRequest) -> Reply:
        """Record ``request`` and choose its reply: a 404 off the chat path, else the next scripted reply, else the
        responder's (a responder that raises gives a 500 whose message names the exception)."""
        with self._lock:
            self.requests.append(request)
            if request.path != CHAT_PATH:
                return Reply(404, f"no route for {request.path}")
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            return as_reply(scripted)
        try:
            return as_reply(self.responder(request.json))
        except Exception as exc:  # surface test bugs as a server error instead of a dropped connection
            return Reply(500, f"fake responder raised {exc!r}")

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _make_handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # header and body are separate writes: avoid 40 ms delayed-ACK stalls

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                request_json = json.loads(raw) if raw else None
            except ValueError:
                request_json = None
            headers = {k.lower(): v for k, v in self.headers.items()}
            recorded = RecordedRequest("POST", self.path, headers, request_json)
            reply = server.reply_for(recorded)
            body = reply.body if reply.body is not None else completion_body(reply, request_json)
            payload = (body if isinstance(body, str) else json.dumps(body)).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the per-request stderr lines."""

    return Handler


@contextmanager
def fake_openai_server(responder: Responder | None = None) -> Iterator[FakeOpenAIServer]:
    """Run a :class:`FakeOpenAIServer` for the duration of the ``with`` block."""
    server = FakeOpenAIServer(responder).start()
    try:
        yield server
    finally:
        server.stop()
