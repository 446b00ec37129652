"""Widgets for a conversation loaded from a session (resume, undo): the same look as live."""

from __future__ import annotations

from typing import Any

from textual.widget import Widget

from kimicode.agent import mentions
from kimicode.backends.repair import arguments_object
from kimicode.tui.widgets.chat import AssistantMessage, Notice, UserMessage
from kimicode.tui.widgets.tool_call import ToolCallRow

MAX_REPLAYED = 400  # messages drawn; older ones are summarised in one line
# User-role messages kimicode wrote itself (prompts/compacted.md, prompts/tests_*.md): shown as notes.
_OWN_NOTES = {
    "[The earlier part of this conversation was compacted": "earlier turns were compacted into a summary",
    "[kimicode ran the tests": "test results were sent to the model",
}


def history_widgets(messages: list[dict[str, Any]]) -> list[Widget]:
    body = [m for m in messages if m.get("role") != "system"]
    widgets: list[Widget] = []
    if len(body) > MAX_REPLAYED:
        widgets.append(Notice(f"… {len(body) - MAX_REPLAYED} earlier messages not shown"))
        body = body[-MAX_REPLAYED:]
    results = {m.get("tool_call_id"): m for m in body if m.get("role") == "tool"}
    for message in body:
        role, content = message.get("role"), message.get("content")
        text = content if isinstance(content, str) else ""
        if role == "user":
            note = next((note for prefix, note in _OWN_NOTES.items() if text.startswith(prefix)), None)
            widgets.append(Notice(note) if note else UserMessage(_prompt_only(text)))
        elif role == "assistant":
            if text.strip():
                widgets.append(AssistantMessage(text))
            for call in message.get("tool_calls") or []:
                widgets.append(_finished_call(call, results.get(call.get("id"))))
    return widgets


def _prompt_only(text: str) -> str:
    """The user's words, without file contents an @-mention attached."""
    return text.split(mentions.HEADER, 1)[0]


def _finished_call(call: dict[str, Any], result: dict[str, Any] | None) -> ToolCallRow:
    function = call.get("function") or {}
    name = str(function.get("name", "?"))
    arguments = arguments_object(function.get("arguments"))
    key = next((str(arguments[k]) for k in ("path", "command", "pattern", "name") if k in arguments), "")
    output = str(result.get("content", "")) if result else "no result"
    failed = result is None or output.startswith(("not run:", "error", "no result"))
    title = f"{name} {key}".strip()[:100]
    return ToolCallRow(str(call.get("id", "")), name, title, "other", arguments, result=(output, failed, {}, 0.0))
