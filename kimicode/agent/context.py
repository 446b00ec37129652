"""Context management: how full the context is, and compaction when it fills.

Token counts come from the provider where it reports them (the last request's
prompt + completion tokens are exact) plus an estimate for messages added since.
Compaction keeps the system prompt, the latest user request and the recent steps,
replaces older turns by a summary the model writes, and never separates a tool call
from its result.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kimicode import prompts
from kimicode.backends.base import Backend, BackendError, ChatRequest, Retrying, TextDelta, Usage

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3.2  # conservative for code and JSON with K2's tokenizer (~3.5-4 for prose)
COMPACT_AT = 0.85  # fraction of the context window that triggers compaction
KEEP_RECENT = 0.25  # fraction of the window kept verbatim after compaction
KEPT_TOOL_OUTPUT_CHARS = 6_000  # larger tool outputs in the kept steps are cut to this


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    return int(sum(len(json.dumps(m, ensure_ascii=False)) for m in messages) / CHARS_PER_TOKEN) + 1


class ContextMeter:
    """Tokens in the history: exact up to the last model reply, estimated after it."""

    def __init__(self) -> None:
        self._exact_tokens = 0
        self._exact_upto = 0  # number of messages the exact count covers

    def record(self, prompt_tokens: int, completion_tokens: int, messages_covered: int) -> None:
        self._exact_tokens = prompt_tokens + completion_tokens
        self._exact_upto = messages_covered

    def reset(self) -> None:
        self._exact_tokens = self._exact_upto = 0

    def tokens(self, messages: list[dict[str, Any]]) -> int:
        if self._exact_upto > len(messages):  # history was cut (undo): estimate it all
            self.reset()
        return self._exact_tokens + estimate_tokens(messages[self._exact_upto :])


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    older: list[dict[str, Any]]  # to be summarised (may be empty when trimming is enough)
    latest_request: dict[str, Any] | None  # re-inserted when it falls inside `older`
    kept: list[dict[str, Any]]  # kept verbatim (tool outputs trimmed)


def plan_compaction(
    messages: list[dict[str, Any]], keep_tokens: int, request: dict[str, Any] | None = None
) -> CompactionPlan | None:
    """Split the history (system prompt first) for compaction, or None if there is
    nothing old enough to summarise. `request` is the user's latest request (not a note
    kimicode added, such as a test report); by default the last user message."""
    if request is None:
        request = next((m for m in reversed(messages) if m["role"] == "user"), None)
    cut = _cut_point(messages, keep_tokens)
    if cut is None:
        return None
    kept = [_trim_tool_output(m) for m in messages[cut:]]
    if cut == 1 and kept == messages[1:]:
        return None  # nothing to summarise and nothing to trim
    older = messages[1:cut]
    summarised = request is not None and any(m is request for m in older)
    return CompactionPlan(older, request if summarised else None, kept)


def _cut_point(messages: list[dict[str, Any]], keep_tokens: int) -> int | None:
    """The earliest step start from which the tail fits in `keep_tokens`; at least the
    last step is always kept. A step starts at a user or assistant message, so a tool
    result is never kept without the call it answers."""
    tail_tokens = 0
    cut = None
    for index in range(len(messages) - 1, 0, -1):
        tail_tokens += estimate_tokens([_trim_tool_output(messages[index])])
        if messages[index]["role"] == "tool":
            continue
        if cut is not None and tail_tokens > keep_tokens:
            break
        cut = index
    return cut


def _trim_tool_output(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if message["role"] != "tool" or not isinstance(content, str) or len(content) <= KEPT_TOOL_OUTPUT_CHARS:
        return message
    note = "\n[... {} characters of this output were cut when the conversation was compacted ...]\n"
    half = (KEPT_TOOL_OUTPUT_CHARS - len(note) - 10) // 2  # the result stays under the limit: idempotent
    note = note.format(len(content) - 2 * half)
    return {**message, "content": content[:half] + note + content[-half:]}


def render_for_summary(messages: list[dict[str, Any]], max_chars: int) -> str:
    """The older turns as plain text for the summariser, long outputs shortened."""
    lines = []
    for message in messages:
        role = message["role"]
        content = message.get("content") or ""
        if role == "tool" and len(content) > 2_000:
            content = content[:1_000] + f"\n[... {len(content) - 2_000} characters cut ...]\n" + content[-1_000:]
        lines.append(f"[{role}] {content}")
        for call in message.get("tool_calls") or ():
            lines.append(f"[tool call] {call['function']['name']}({call['function']['arguments'][:500]})")
    text = "\n".join(lines)
    if len(text) > max_chars:  # keep the most recent part: it matters most for what comes next
        text = "[... earlier part cut ...]\n" + text[-max_chars:]
    return text


def fallback_summary(messages: list[dict[str, Any]]) -> str:
    """A mechanical summary for when the model cannot write one: requests and actions."""
    requests = [m["content"] for m in messages if m["role"] == "user" and isinstance(m.get("content"), str)]
    actions = [
        f"{c['function']['name']}({c['function']['arguments'][:120]})"
        for m in messages
        for c in m.get("tool_calls") or ()
    ]
    parts = ["Earlier requests:", *(f"- {r[:500]}" for r in requests)]
    if actions:
        parts += ["Tool calls made (oldest first):", *(f"- {a}" for a in actions[-60:])]
    return "\n".join(parts)


async def summarize(backend: Backend, older: list[dict[str, Any]], account: Callable[[Usage], None]) -> str:
    """The model's summary of `older` (its usage passed to `account`, so compaction counts
    towards the budgets); a mechanical summary if the model call fails."""
    request = ChatRequest(
        [
            {"role": "system", "content": prompts.render("compact", max_words="600")},
            {"role": "user", "content": render_for_summary(older, int(backend.info.context_window * CHARS_PER_TOKEN / 2))},
        ],
        temperature=0.3,
        # Thinking models spend part of the budget on reasoning before the summary itself.
        max_tokens=2_000 + (16_000 if backend.info.supports_reasoning else 0),
    )
    text: list[str] = []
    try:
        async for event in backend.stream(request):
            match event:
                case TextDelta(text=piece):
                    text.append(piece)
                case Retrying():
                    text.clear()
                case Usage():
                    account(event)
    except BackendError as exc:
        log.warning("compaction summary failed, using a plain one: %s", exc)
        return fallback_summary(older)
    return "".join(text).strip() or fallback_summary(older)
