"""A fake OpenAI-compatible chat-completions server for tests.

It speaks real HTTP on 127.0.0.1 (so a subprocess CLI can use it too) from a daemon
thread, which lets sync and asyncio tests alike drive it with the real ``openai`` SDK::

    with FakeOpenAIServer() as server:
        server.script(Reply("hi", reasoning="hmm"), Fault(429, {"Retry-After": "1"}))
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)

Each ``POST /v1/chat/completions`` consumes the next scripted item, or asks
``server.responder(body)`` once the script is empty. Streams use OpenAI's SSE chunk
layout (``reasoning_content`` deltas as Moonshot sends them, tool-call arguments in
fragments, the ``include_usage`` chunk) and can be slowed, dropped or left hanging.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODELS = ("kimi-k2-0905-preview", "kimi-k2-turbo-preview", "kimi-k2-thinking")
NO_SCRIPT_LEFT = "fake server: no scripted response left"

_call_ids = itertools.count()


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] | None = None
    id: str | None = None
    raw_arguments: str | None = None  # sent verbatim, e.g. malformed JSON

    def __post_init__(self) -> None:
        # A process-wide counter keeps ids unique across turns and known before serving.
        if self.id is None:
            self.id = f"call_{next(_call_ids)}"

    @property
    def arguments_json(self) -> str:
        return self.raw_arguments if self.raw_arguments is not None else json.dumps(self.arguments or {})


@dataclass
class Reply:
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: tuple[int, int, int] | None = (100, 20, 0)  # prompt, completion, cached tokens
    finish_reason: str | None = None  # None: "tool_calls" if tool_calls else "stop"
    # The rest only affects streamed replies.
    chunk_size: int = 8
    delay: float = 0.0
    drop_after: int | None = None
    hang: bool = False
    usage_in_choice: bool = False  # Moonshot puts usage in the last choice

    @property
    def resolved_finish_reason(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")


@dataclass
class RawStream:
    """SSE `data:` payloads sent verbatim (dicts as JSON), for server quirks that
    Reply cannot express: missing fields, error events, non-JSON lines."""

    events: list[dict[str, Any] | str]


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None

    def payload(self) -> dict[str, Any]:
        return self.body if self.body is not None else _error(self.status, f"fake server: HTTP {self.status}")


class Headers(dict):
    """Request headers with lower-cased keys; lookups ignore case, as in HTTP."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


@dataclass
class Received:
    body: dict[str, Any]
    headers: Headers


def _error(status: int, message: str) -> dict[str, Any]:
    kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
    default = "server_error" if status >= 500 else "invalid_request_error"
    code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
    return {"error": {"message": message, "type": kind.get(status, default), "code": code}}


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), max(size, 1))]


def _usage(reply: Reply) -> dict[str, Any] | None:
    if reply.usage is None:
        return None
    prompt, completion, cached = reply.usage
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if reply.usage_in_choice:
        return usage | {"cached_tokens": cached}
    return usage | {"prompt_tokens_details": {"cached_tokens": cached}}


def _tool_call_json(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json}}


def _completion(reply: Reply, body: dict[str, Any], completion_id: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or (None if reply.tool_calls else "")}
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = [_tool_call_json(c) for c in reply.tool_calls]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.resolved_finish_reason}
    result = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", MODELS[0]),
        "choices": [choice],
    }
    usage = _usage(reply)
    if usage is not None:
        (choice if reply.usage_in_choice else result)["usage"] = usage
    return result


def _stream_events(reply: Reply, body: dict[str, Any], completion_id: str) -> tuple[list[Any], list[Any]]:
    """The SSE payloads as (deltas, tail); tail is the finish chunk, usage chunk, "[DONE]"."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", MODELS[0]),
        "system_fingerprint": "fp_fake",
    }
    # With include_usage, OpenAI sends "usage": null on every chunk but the last.
    usage_null = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **more: Any) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason, **more}
        return base | {"choices": [choice]} | usage_null

    size = reply.chunk_size
    deltas = [chunk({"role": "assistant", "content": ""})]
    deltas += [chunk({"reasoning_content": piece}) for piece in _pieces(reply.reasoning, size)]
    deltas += [chunk({"content": piece}) for piece in _pieces(reply.text, size)]
    for index, call in enumerate(reply.tool_calls):
        first = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        deltas.append(chunk({"tool_calls": [first]}))
        for piece in _pieces(call.arguments_json, size):
            deltas.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))

    usage = _usage(reply)
    if reply.usage_in_choice and usage is not None:
        tail: list[Any] = [chunk({}, reply.resolved_finish_reason, usage=usage)]
    else:
        tail = [chunk({}, reply.resolved_finish_reason)]
        if include_usage and usage is not None:
            tail.append(base | {"choices": [], "usage": usage})
    return deltas, tail + ["[DONE]"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked bodies, like the real API
    disable_nagle_algorithm = True  # small SSE writes would otherwise stall ~40 ms on delayed ACKs
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, add=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean

    def do_GET(self) -> None:
        if self.path.split("?")[0].rstrip("/") == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "moonshot"} for m in MODELS]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(404, _error(404, f"fake server: unknown path GET {self.path}"))

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?")[0].rstrip("/") != "/v1/chat/completions":
            return self._send_json(404, _error(404, f"fake server: unknown path POST {self.path}"))
        try:
            body = json.loads(raw)
        except ValueError:
            return self._send_json(400, _error(400, "fake server: request body is not JSON"))
        fake = self.server.fake
        completion_id = f"chatcmpl-fake-{fake._record(body, self.headers)}"
        item = fake._next_response(body)
        try:
            if isinstance(item, Fault):
                self._send_json(item.status, item.payload(), item.headers)
            elif body.get("stream"):
                self._stream(item, body, completion_id)
            else:
                self._send_json(200, _completion(item, body, completion_id))
        except OSError:  # the client went away, or close() shut the socket
            self.close_connection = True

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, reply: Reply | RawStream, body: dict[str, Any], completion_id: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        # Chunked encoding makes an early close a protocol error the client notices.
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if isinstance(reply, RawStream):
            return self._send_events(reply.events)
        deltas, tail = _stream_events(reply, body, completion_id)
        events = deltas + tail
        if reply.drop_after is not None:
            events = events[: min(reply.drop_after, len(events) - 1)]  # never reach [DONE]
        elif reply.hang:
            events = deltas
        stopping = self.server.fake._stopping
        for i, event in enumerate(events):
            if i and reply.delay and stopping.wait(reply.delay):
                return self._abort()
            self._write_event(event)
        if reply.drop_after is not None:
            return self._abort()
        if reply.hang:
            while not stopping.is_set() and not self._client_gone():
                pass
            return self._abort()
        self.wfile.write(b"0\r\n\r\n")

    def _send_events(self, events: list[dict[str, Any] | str]) -> None:
        for event in events:
            self._write_event(event)
        self.wfile.write(b"0\r\n\r\n")

    def _write_event(self, event: dict[str, Any] | str) -> None:
        data = f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _client_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0.05)
        try:
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    def _abort(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # disconnects are expected here
            super().handle_error(request, client_address)


class FakeOpenAIServer:
    """Serves scripted chat completions on a random 127.0.0.1 port until close()."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.responder: Callable[[dict[str, Any]], Reply | Fault] | None = None
        self._script: deque[Reply | Fault] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self.port = self._httpd.server_port
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()

    def script(self, *items: Reply | RawStream | Fault) -> None:
        with self._lock:
            self._script.extend(items)

    @property
    def requests(self) -> list[dict[str, Any]]:
        return [r.body for r in self.received]

    @property
    def pending(self) -> int:
        """Scripted items not consumed yet."""
        return len(self._script)

    def close(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # wakes handlers blocked on keep-alive reads or hanging streams
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _record(self, body: dict[str, Any], headers: Any) -> int:
        with self._lock:
            self.received.append(Received(body, Headers((k.lower(), v) for k, v in headers.items())))
            return len(self.received)

    def _next_response(self, body: dict[str, Any]) -> Reply | RawStream | Fault:
        with self._lock:
            item = self._script.popleft() if self._script else None
        if item is None and self.responder is not None:
            try:
                item = self.responder(body)
            except Exception as exc:  # surface responder bugs in the failing test
                item = Fault(500, body=_error(500, f"fake server: responder raised {exc!r}"))
        return item if item is not None else Fault(500, body=_error(500, NO_SCRIPT_LEFT))
