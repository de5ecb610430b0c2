"""A scripted OpenAI-compatible server on loopback, for tests that run the real client.

Serves ``POST /v1/chat/completions`` from a queue of :class:`Reply` objects, one per request,
in order: normal JSON replies with usage counts, malformed text, HTTP errors with headers
(429 + Retry-After), replies slower than the client's timeout, and rejections of a
``response_format``. Every request body and its headers are kept in ``requests`` so tests
can assert on what the client sent. An exhausted script answers 500 with a clear message,
so a test that makes more calls than it scripted fails loudly instead of hanging.

Reusable outside ``tests/llm``: ``with FakeOpenAI() as server: ...`` (no pytest needed).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Looks like a real key so a leak would be visible in any text it reached.
SECRET_KEY = "sk-test-Sup3rS3cretKey-0123456789"


@dataclass
class Reply:
    content: str | None = None  # the assistant message text (for status 200)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # error message body for non-200 replies
    delay_s: float = 0.0  # sleep before answering (to exceed the client timeout)
    prompt_tokens: int = 11
    completion_tokens: int = 7
    cached_tokens: int | None = None  # None: no prompt_tokens_details in the usage
    finish_reason: str = "stop"


def ok(obj: Any, **kw: Any) -> Reply:
    """A well-formed reply whose content is ``obj`` as JSON."""
    return Reply(content=json.dumps(obj), **kw)


def text(content: str, **kw: Any) -> Reply:
    """A reply with arbitrary (e.g. malformed) content."""
    return Reply(content=content, **kw)


def rate_limited(retry_after: str | None = "0", **kw: Any) -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Reply(status=429, headers=headers, error="Rate limit reached, slow down", **kw)


def server_error(status: int = 503, error: str = "upstream overloaded", **kw: Any) -> Reply:
    return Reply(status=status, error=error, **kw)


def slow(reply: Reply, delay_s: float) -> Reply:
    reply.delay_s = delay_s
    return reply


def reject_response_format(kind: str = "json_schema") -> Reply:
    return Reply(status=400, error=f"response_format type '{kind}' is not supported")


class FakeOpenAI:
    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def push(self, *replies: Reply) -> FakeOpenAI:
        with self._lock:
            self.script.extend(replies)
        return self

    @property
    def pending(self) -> int:
        return len(self.script)

    def bodies(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests]

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next(self, body: dict[str, Any], headers: dict[str, str]) -> Reply | None:
        with self._lock:
            self.requests.append({"body": body, "headers": headers})
            return self.script.popleft() if self.script else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict, headers: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) before we answered

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_raw": raw.decode(errors="replace")}
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
                    return
                reply = fake._next(body, {k.lower(): v for k, v in self.headers.items()})
                if reply is None:
                    self._send(500, {"error": {"message": "fake server: script exhausted"}},
                               {"x-should-retry": "false"})
                    return
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.status != 200:
                    payload = {"error": {"message": reply.error or "error", "type": "fake",
                                         "code": str(reply.status)}}
                    self._send(reply.status, payload, reply.headers)
                    return
                self._send(200, {
                    "id": f"chatcmpl-fake-{len(fake.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.content},
                        "finish_reason": reply.finish_reason,
                    }],
                    "usage": {
                        "prompt_tokens": reply.prompt_tokens,
                        "completion_tokens": reply.completion_tokens,
                        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                        **({} if reply.cached_tokens is None else {
                            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens}
                        }),
                    },
                }, reply.headers)

        return Handler
