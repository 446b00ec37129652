"""Typed, immutable events the agent core emits; front ends only render these.

An `ApprovalRequested` carries a future the front end resolves with an `Approval`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from kimicode.backends.base import ReasoningDelta, Retrying, TextDelta

ToolKind = Literal["read", "edit", "delete", "move", "search", "execute", "think", "fetch", "other"]
StopReason = Literal[
    "end_turn", "max_steps", "max_cost", "max_tokens", "timeout", "loop", "cancelled", "error", "length",
    "tests_failed", "refusal",
]


@dataclass(frozen=True, slots=True)
class TurnStarted:
    prompt: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    call_id: str
    tool: str
    arguments: dict[str, Any]
    title: str  # one human line, e.g. "Edit src/app.py"
    kind: ToolKind


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """Live output of a running tool (shell stdout/stderr), for display only."""

    call_id: str
    text: str


class Decision(enum.Enum):
    ALLOW_ONCE = "allow_once"
    ALLOW_ALWAYS = "allow_always"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Approval:
    decision: Decision
    note: str = ""  # passed back to the model when denying


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    call_id: str
    tool: str
    title: str
    kind: ToolKind
    reason: str  # why the policy asks
    rules: tuple[str, ...]  # what "allow always" persists, e.g. ("shell:git push",)
    reply: asyncio.Future[Approval] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    call_id: str
    tool: str
    output: str  # what the model sees
    is_error: bool
    display: dict[str, Any] = field(default_factory=dict)  # e.g. {"diff": ...} or {"exit_code": 0}
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class PlanItem:
    step: str
    status: Literal["pending", "in_progress", "done"]


@dataclass(frozen=True, slots=True)
class PlanUpdated:
    items: tuple[PlanItem, ...]


@dataclass(frozen=True, slots=True)
class UsageUpdated:
    prompt_tokens: int  # totals for the session so far
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    context_tokens: int  # size of the last request
    context_window: int


@dataclass(frozen=True, slots=True)
class CheckpointCreated:
    """The work tree was snapshotted; `kimicode undo ID` goes back to it."""

    id: str
    label: str


@dataclass(frozen=True, slots=True)
class Compacted:
    """Older turns were replaced by a summary to make room in the context."""

    tokens_before: int
    tokens_after: int
    messages_summarized: int


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    message: str
    kind: str = "internal"  # "config" | "request" | "exhausted" (see BackendError) | "internal"


@dataclass(frozen=True, slots=True)
class TurnFinished:
    stop_reason: StopReason
    result: str  # the final assistant text (or the error message)


Event = (
    TurnStarted
    | TextDelta
    | ReasoningDelta
    | Retrying
    | ToolCallStarted
    | ToolOutput
    | ApprovalRequested
    | ToolCallFinished
    | PlanUpdated
    | UsageUpdated
    | Compacted
    | CheckpointCreated
    | ErrorEvent
    | TurnFinished
)

_TYPE_NAMES = {
    TurnStarted: "turn_started",
    TextDelta: "text_delta",
    ReasoningDelta: "reasoning_delta",
    Retrying: "retrying",
    ToolCallStarted: "tool_call_started",
    ToolOutput: "tool_output",
    ApprovalRequested: "approval_requested",
    ToolCallFinished: "tool_call_finished",
    PlanUpdated: "plan_updated",
    UsageUpdated: "usage",
    Compacted: "compacted",
    CheckpointCreated: "checkpoint",
    ErrorEvent: "error",
    TurnFinished: "turn_finished",
}


def event_to_json(event: Event) -> dict[str, Any]:
    """A JSON-ready dict with a `type` tag (futures and other live objects are left out)."""
    data: dict[str, Any] = {"type": _TYPE_NAMES[type(event)]}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(value, asyncio.Future):
            continue
        data[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    if isinstance(event, PlanUpdated):
        data["items"] = [dataclasses.asdict(item) for item in event.items]
    return data
