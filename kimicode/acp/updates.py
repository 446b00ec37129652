"""The agent core's events as ACP `session/update`s (pure functions, no I/O)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import acp
from acp.schema import ToolCallLocation

from kimicode.events import PlanUpdated, ToolCallFinished, ToolCallStarted

MAX_LIVE_OUTPUT = 8_000  # characters of a running command's output shown in the editor
_PLAN_STATUS = {"pending": "pending", "in_progress": "in_progress", "done": "completed"}
_PATH_ARGUMENTS = ("path", "file_path")


def tool_call_started(event: ToolCallStarted, workspace: Path) -> acp.schema.ToolCallStart:
    return acp.start_tool_call(
        event.call_id,
        event.title,
        kind=event.kind,
        status="in_progress",
        locations=locations(event.arguments, workspace),
        raw_input=event.arguments,
    )


def tool_output(call_id: str, text_so_far: str) -> acp.schema.ToolCallProgress:
    tail = text_so_far[-MAX_LIVE_OUTPUT:]
    return acp.update_tool_call(call_id, content=[acp.tool_content(acp.text_block(tail))])


def tool_call_finished(event: ToolCallFinished, edit: tuple[str, str | None, str] | None,
                       terminal_id: str | None = None) -> acp.schema.ToolCallProgress:
    """`edit` is (absolute path, text before, text after) for a file the call changed;
    `terminal_id` the editor terminal the command ran in (kept on show)."""
    if edit is not None and not event.is_error:
        path, before, after = edit
        content: list[Any] = [acp.tool_diff_content(path, after, before)]
    elif terminal_id is not None:
        content = [acp.tool_terminal_ref(terminal_id)]
    else:
        content = [acp.tool_content(acp.text_block(_shown_output(event)))]
    return acp.update_tool_call(
        event.call_id, status="failed" if event.is_error else "completed", content=content, raw_output=event.output
    )


def plan(event: PlanUpdated) -> acp.schema.AgentPlanUpdate:
    return acp.update_plan(
        acp.plan_entry(item.step, status=_PLAN_STATUS.get(item.status, "pending")) for item in event.items  # type: ignore[arg-type]
    )


def locations(arguments: dict[str, Any], workspace: Path) -> list[ToolCallLocation]:
    """The file a call is about, absolute (editors open it), with the line when known."""
    for key in _PATH_ARGUMENTS:
        value = arguments.get(key)
        if isinstance(value, str) and value:
            line = arguments.get("offset")
            return [ToolCallLocation(path=str((workspace / value).resolve()), line=line if isinstance(line, int) else None)]
    return []


def edited_path(arguments: dict[str, Any], workspace: Path) -> Path | None:
    value = next((arguments.get(key) for key in _PATH_ARGUMENTS if isinstance(arguments.get(key), str)), None)
    return (workspace / value).resolve() if value else None


def _shown_output(event: ToolCallFinished) -> str:
    display = event.display
    if "command" in display:
        code = display.get("exit_code")
        tail = f"\n[exit code {code}]" if code not in (0, None) else ""
        return f"$ {display['command']}\n{display.get('output', event.output)}{tail}"
    return event.output
