"""What a tool call is about to do, from its arguments: shown when asking for approval."""

from __future__ import annotations

import difflib
from typing import Any

MAX_PREVIEW_LINES = 60


def call_preview(tool: str, arguments: dict[str, Any]) -> tuple[str, str]:
    """(text, lexer) describing the call: a diff for edits, the command for shell,
    the file head for writes, else the arguments as `key: value` lines."""
    match tool:
        case "shell":
            return str(arguments.get("command", "")), "bash"
        case "edit_file":
            return _edit_diff(arguments.get("path", ""), [arguments]), "diff"
        case "multi_edit":
            edits = arguments.get("edits")
            return _edit_diff(arguments.get("path", ""), edits if isinstance(edits, list) else []), "diff"
        case "write_file":
            content = str(arguments.get("content", ""))
            return _cap("\n".join("+" + line for line in content.splitlines())), "diff"
    lines = [f"{key}: {value}" for key, value in arguments.items()]
    return _cap("\n".join(lines)), "text"


def _edit_diff(path: str, edits: list[Any]) -> str:
    hunks = []
    for edit in edits:
        if not isinstance(edit, dict):
            continue
        old = str(edit.get("old_string", "")).splitlines(keepends=True)
        new = str(edit.get("new_string", "")).splitlines(keepends=True)
        diff = difflib.unified_diff(old, new, f"a/{path}", f"b/{path}", n=2, lineterm="")
        hunks.append("\n".join(line.rstrip("\n") for line in diff))
    return _cap("\n".join(hunks))


def _cap(text: str) -> str:
    lines = text.splitlines()
    if len(lines) <= MAX_PREVIEW_LINES:
        return text
    return "\n".join(lines[:MAX_PREVIEW_LINES] + [f"… {len(lines) - MAX_PREVIEW_LINES} more lines"])
