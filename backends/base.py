"""The contract between the agent core and any model backend.

A backend turns a `ChatRequest` (OpenAI chat format) into a stream of `ChatEvent`s.
Retries, error classification and K2 repairs happen behind this line, never in the loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    context_window: int = 131_072
    max_output: int = 16_384
    temperature: float = 0.6
    input_price: float = 0.0  # USD per million uncached input tokens
    output_price: float = 0.0  # USD per million output tokens
    cached_input_price: float = 0.0  # USD per million cache-hit input tokens
    supports_reasoning: bool = False

    def cost(self, usage: Usage) -> float:
        uncached = max(usage.prompt_tokens - usage.cached_tokens, 0)
        return (
            uncached * self.input_price
            + usage.cached_tokens * self.cached_input_price
            + usage.completion_tokens * self.output_price
        ) / 1e6


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a tool call as it streams in (for live display only)."""

    index: int
    name: str | None
    arguments_delta: str


@dataclass(frozen=True, slots=True)
class ToolCallDone:
    """A complete tool call. `arguments` is the raw JSON text (possibly repaired);
    `arguments_error` says why it still is not a JSON object, if it is not."""

    id: str
    name: str
    arguments: str
    arguments_error: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


@dataclass(frozen=True, slots=True)
class Retrying:
    """The attempt failed and will be retried: discard any partial output of it."""

    attempt: int
    delay: float
    reason: str


FinishReason = Literal["stop", "tool_calls", "length", "content_filter", "other"]


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason


ChatEvent = TextDelta | ReasoningDelta | ToolCallDelta | ToolCallDone | Usage | Retrying | Finish


class BackendError(Exception):
    """A model call failed for good. `kind` drives the exit code of headless runs;
    "context" means the history no longer fits the model's window."""

    def __init__(self, message: str, *, kind: Literal["config", "request", "context", "exhausted"] = "request"):
        super().__init__(message)
        self.kind = kind


class Backend(Protocol):
    info: ModelInfo

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]: ...

    async def aclose(self) -> None: ...
