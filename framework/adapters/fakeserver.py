"""A local OpenAI-compatible chat-completions server, for tests and demos of anything that asks models.

It speaks the real wire format (``POST /v1/chat/completions``, ``GET /v1/models``), binds to
127.0.0.1 on a free port, and records every request it receives (time, prompt, status) and the
most requests it ever had in flight, so a test can check what a client really sent. ``fault``
lets a test misbehave per request: ``fault(prompt, n)`` (``n`` = how many requests this prompt has
had, this one included) may sleep or block (bounded, please) and returns an HTTP status to answer
with instead of a completion (or ``(status, headers)``, e.g. a Retry-After), or None to answer
normally.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class LoggedRequest:
    time: float  # time.monotonic() when the request arrived
    prompt: str  # the last user message
    system: str | None  # the system message, if any
    body: dict[str, Any]
    status: int
    headers: dict[str, str]  # the request's headers


def echo(prompt: str) -> str:
    return f"echo: {prompt}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler blocked in a fault must not hold up stop()
    allow_reuse_address = True


class FakeChatServer:
    def __init__(self, reply: Callable[[str], str] = echo, *,
                 fault: Callable[[str, int], int | tuple[int, dict[str, str]] | None] | None = None,
                 model: str = "fake-model",
                 delay_s: float = 0.0):
        self.reply, self.fault, self.model, self.delay_s = reply, fault, model, delay_s
        self.log: list[LoggedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> "FakeChatServer":
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-chat-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeChatServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def prompts(self) -> list[str]:
        """The prompts of every completion request received, in arrival order (retries included)."""
        with self._lock:
            return [r.prompt for r in self.log]

    # -- the wire format --------------------------------------------------------------------------

    def _completion(self, body: dict[str, Any], prompt: str) -> dict[str, Any]:
        text = self.reply(prompt)
        finish = "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if max_tokens is not None and len(text.split()) > int(max_tokens):  # one "token" per word
            text, finish = " ".join(text.split()[: int(max_tokens)]), "length"
        return {
            "id": f"chatcmpl-{len(self.log)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                      "total_tokens": len(prompt.split()) + len(text.split())},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model",
                                                                 "created": 0, "owned_by": "fake"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

            def do_POST(self) -> None:
                arrived = time.monotonic()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                messages = body.get("messages", [])
                prompt = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
                system = next((m["content"] for m in messages if m.get("role") == "system"), None)
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    n = server._seen[prompt] = server._seen.get(prompt, 0) + 1
                try:
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    fault = server.fault(prompt, n) if server.fault else None
                    status, headers = fault if isinstance(fault, tuple) else (fault, {})
                    with server._lock:
                        server.log.append(LoggedRequest(arrived, prompt, system, body, status or 200,
                                                        dict(self.headers.items())))
                    if status is None:
                        self._send(200, server._completion(body, prompt))
                    else:
                        self._send(status, {"error": {"message": f"injected HTTP {status}",
                                                      "type": "fake_fault", "code": status}}, headers)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): fine
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler
