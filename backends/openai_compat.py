"""Backend for Moonshot, OpenRouter and any OpenAI-compatible endpoint (vLLM, SGLang).

One `stream()` call is one model step: it retries 429/5xx/timeouts/dropped
streams with exponential backoff and jitter (honouring Retry-After), yielding
`Retrying` so the caller drops the partial output of the failed attempt.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from kimicode.backends.base import (
    BackendError,
    ChatEvent,
    ChatRequest,
    Finish,
    FinishReason,
    ModelInfo,
    ReasoningDelta,
    Retrying,
    TextDelta,
    ToolCallDelta,
    ToolCallDone,
    Usage,
)
from kimicode.backends.k2.chat import parse_tool_section
from kimicode.backends.repair import LeakedMarkupFilter, normalize_history, repair_arguments, repair_tool_name


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        # Full jitter: spreads clients that failed together.
        return random.uniform(0, min(self.base_delay * 2 ** (attempt - 1), self.max_delay))


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class OpenAICompatBackend:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        info: ModelInfo,
        retry: RetryPolicy = RetryPolicy(),
        request_timeout: float = 300.0,
        headers: dict[str, str] | None = None,
    ):
        self.info = info
        self._retry = retry
        # The SDK's own retries are off: ours see dropped streams too and report each attempt.
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=request_timeout, default_headers=headers
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        attempt = 1
        while True:
            try:
                async for event in self._attempt(request):
                    yield event
                return
            except _Retryable as exc:
                if attempt >= self._retry.max_attempts:
                    raise BackendError(
                        f"model request failed after {attempt} attempts: {exc}", kind="exhausted"
                    ) from None
                delay = self._retry.delay(attempt, exc.retry_after)
                yield Retrying(attempt, delay, str(exc))
                await asyncio.sleep(delay)
                attempt += 1

    async def aclose(self) -> None:
        await self._client.close()

    def _request_body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.info.name,
            "messages": normalize_history(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": self.info.temperature if request.temperature is None else request.temperature,
            "max_tokens": request.max_tokens or self.info.max_output,
        }
        if request.tools:
            body["tools"] = request.tools
            body["tool_choice"] = "auto"
        return body

    async def _attempt(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        declared = {t["function"]["name"] for t in request.tools}
        assembler = _StreamAssembler(declared)
        try:
            # `post` rather than `chat.completions.create`: the SDK's typed transform of the
            # body walks every message on every call (~25 ms per step at 400 messages).
            stream = await self._client.post(
                "/chat/completions",
                body=self._request_body(request),
                options={"security": {"bearer_auth": True}},
                cast_to=ChatCompletion,
                stream=True,
                stream_cls=openai.AsyncStream[ChatCompletionChunk],
            )
            async with stream:
                async for chunk in stream:
                    for event in assembler.feed(chunk):
                        yield event
        except openai.APIStatusError as exc:
            raise _classify_status(exc) from None
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise _Retryable(f"connection problem: {exc}") from None
        except openai.APIError as exc:  # an error event inside the stream
            if _is_fatal(exc.body):
                raise _request_error(f"the model request failed: {_error_message(exc)}", exc.body) from None
            raise _Retryable(f"stream error: {_error_message(exc)}") from None
        except json.JSONDecodeError as exc:
            raise _Retryable(f"malformed stream data: {exc}") from None
        except Exception as exc:  # the HTTP layer's own errors when a stream is cut
            if type(exc).__module__.split(".")[0] not in ("httpx2", "httpx", "httpcore", "h11"):
                raise
            raise _Retryable(f"stream dropped: {type(exc).__name__}: {exc}") from None
        if not assembler.finished:
            raise _Retryable("stream ended before the model finished")
        for event in assembler.finish():
            yield event


# Error codes and types that no retry can fix.
_FATAL_ERRORS = (
    "insufficient_quota",
    "exceeded_current_quota",
    "billing",
    "context_length",
    "invalid_request",
)


# How servers word "the prompt is too long" (OpenAI, vLLM/SGLang, Moonshot).
_CONTEXT_OVERFLOW = ("context length", "context_length", "maximum context", "token limit", "too many tokens",
                     "prompt is too long")


def _classify_status(exc: openai.APIStatusError) -> Exception:
    status = exc.status_code
    message = _error_message(exc)
    if status == 429 and _is_fatal(exc.body):
        return BackendError(f"quota or billing limit reached (HTTP 429): {message}")
    if status == 429 or status >= 500 or status == 408:
        return _Retryable(f"HTTP {status}: {message}", _retry_after(exc.response.headers))
    if status in (401, 403):
        return BackendError(f"the endpoint refused the API key (HTTP {status}): {message}", kind="config")
    if status == 404:
        return BackendError(f"model or endpoint not found (HTTP 404): {message}", kind="config")
    return _request_error(f"the model request was rejected (HTTP {status}): {message}", exc.body)


def _request_error(message: str, body: Any) -> BackendError:
    """A request the server refused; a full context gets its own kind so the loop can compact."""
    fields = _error_fields(body)
    label = f"{message} {fields.get('code') or ''} {fields.get('type') or ''}".lower()
    overflow = any(hint in label for hint in _CONTEXT_OVERFLOW)
    return BackendError(message, kind="context" if overflow else "request")


def _error_fields(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner
    return {}


def _is_fatal(body: Any) -> bool:
    fields = _error_fields(body)
    label = f"{fields.get('code') or ''} {fields.get('type') or ''}".lower()
    return any(word in label for word in _FATAL_ERRORS)


def _error_message(exc: openai.APIError) -> str:
    return str(_error_fields(exc.body).get("message") or exc.message)


def _retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    if value := headers.get("retry-after-ms"):
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None  # unreadable: fall back to our own backoff


class _StreamAssembler:
    """Turns chat.completion.chunk objects into ChatEvents for one attempt."""

    def __init__(self, declared_tools: set[str]):
        self._declared = declared_tools
        self._filter = LeakedMarkupFilter()
        self._calls: dict[int, dict[str, str]] = {}
        self._usage: Usage | None = None
        self.finish_reason: FinishReason | None = None

    @property
    def finished(self) -> bool:
        # Some servers end with [DONE] and a usage chunk but never send finish_reason.
        return self.finish_reason is not None or self._usage is not None

    def feed(self, chunk: Any) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        if chunk.usage is not None:
            self._usage = _usage(chunk.usage)
        for choice in chunk.choices or ():
            if choice.delta is not None:  # content-filter chunks may carry no delta
                events += self._feed_delta(choice.delta)
            if choice.finish_reason:
                self.finish_reason = _finish_reason(choice.finish_reason)
                if usage := _extra(choice, "usage"):  # Moonshot puts usage in the choice
                    self._usage = _usage(usage)
        return events

    def _feed_delta(self, delta: Any) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        reasoning = _extra(delta, "reasoning_content") or _extra(delta, "reasoning")
        if reasoning:
            events.append(ReasoningDelta(_clean(reasoning)))
        if delta.content:
            if visible := self._filter.feed(_clean(delta.content)):
                events.append(TextDelta(visible))
        for call in delta.tool_calls or ():
            slot = self._slot(call.index, call.id)
            function = call.function
            name = (function.name or "") if function else ""
            if name and name != slot["name"]:  # some servers repeat the whole name in every piece
                slot["name"] += name
            piece = _clean(function.arguments or "") if function else ""
            slot["arguments"] += piece
            events.append(ToolCallDelta(len(self._calls) - 1 if call.index is None else call.index, name or None, piece))
        return events

    def _slot(self, index: int | None, call_id: str | None) -> dict[str, str]:
        if index is None:  # servers that omit the index: a new id starts a new call
            last = self._calls[max(self._calls)] if self._calls else None
            if last is not None and (not call_id or call_id == last["id"]):
                return last
            index = len(self._calls)
        slot = self._calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
        slot["id"] = slot["id"] or (call_id or "")
        return slot

    def finish(self) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        rest, leaked = self._filter.finish()
        if rest:
            events.append(TextDelta(rest))
        calls = [(c["id"], c["name"], c["arguments"]) for _, c in sorted(self._calls.items())]
        if leaked is not None:
            calls += [(p.id, p.name, p.arguments) for p in parse_tool_section(leaked)]
        for index, (call_id, name, raw_arguments) in enumerate(calls):
            arguments, error = repair_arguments(raw_arguments)
            name = repair_tool_name(name, self._declared)
            events.append(ToolCallDone(call_id or f"functions.{name}:{index}", name, arguments, error))
        if self._usage is not None:
            events.append(self._usage)
        reason = self.finish_reason or "stop"
        events.append(Finish("tool_calls" if calls and reason == "stop" else reason))
        return events


def _clean(text: str) -> str:
    """Replace lone surrogates (JSON escapes like "\\ud83d" decode to them); they cannot be
    encoded as UTF-8 and would break every writer downstream."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _extra(obj: Any, name: str) -> Any:
    value = getattr(obj, name, None)
    if value is None and isinstance(getattr(obj, "model_extra", None), dict):
        value = obj.model_extra.get(name)
    return value


def _usage(raw: Any) -> Usage:
    get = raw.get if isinstance(raw, dict) else lambda key: getattr(raw, key, None)
    details = get("prompt_tokens_details")
    cached = get("cached_tokens")  # Moonshot: top level
    if not cached and details is not None:
        cached = details.get("cached_tokens") if isinstance(details, dict) else details.cached_tokens
    return Usage(int(get("prompt_tokens") or 0), int(get("completion_tokens") or 0), int(cached or 0))


def _finish_reason(raw: str) -> FinishReason:
    return raw if raw in ("stop", "tool_calls", "length", "content_filter") else "other"  # type: ignore[return-value]
