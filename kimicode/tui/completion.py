"""Completion candidates for the prompt: `@file` mentions and `/commands`.

Pure functions with no Textual in them, so the ranking is tested on its own.
"""

from __future__ import annotations

import heapq
import re
from itertools import islice
from pathlib import Path

from kimicode.tui.commands import SLASH_COMMANDS, SlashCommand
from kimicode.workspace import PathError, Workspace

MAX_FILES = 20_000  # a huge tree must not stall the first `@` or eat memory
MENU_LIMIT = 10

# An @mention starts the line or follows whitespace, so "user@host" is left alone.
_AT_TOKEN = re.compile(r"(?:^|(?<=\s))@(\S*)$")
_SLASH_ONLY = re.compile(r"/[^\s/]*")  # "/etc/..." is a path, as parse_slash sees it


def at_token(before_cursor: str) -> tuple[int, str] | None:
    """(column just after the "@", query) when the text before the cursor ends in an @token."""
    match = _AT_TOKEN.search(before_cursor)
    if match is None:
        return None
    return match.start(1), match.group(1)


def slash_query(text: str) -> str | None:
    """The partial command name when the whole input is "/partial" with no space yet."""
    return text[1:] if _SLASH_ONLY.fullmatch(text) else None


def list_workspace_files(root: Path, limit: int = MAX_FILES) -> list[str]:
    """Workspace-relative posix paths, gitignore-aware, at most `limit` of them.

    Slow on big trees: call it off the UI thread."""
    try:
        workspace = Workspace(root)
    except PathError:
        return []
    return [workspace.relative(path) for path in islice(workspace.iter_files(), limit)]


def rank_paths(query: str, paths: list[str], limit: int = MENU_LIMIT) -> list[str]:
    """The best `limit` paths for `query`, case-insensitively: basename (or path) prefix
    first, then substring, then subsequence; shorter paths first within each tier."""
    if not query:
        return heapq.nsmallest(limit, paths, key=lambda p: (len(p), p))
    needle = query.lower()
    # Runs per keystroke over up to 20,000 paths on the UI thread, so the subsequence
    # test is a regex without backtracking ("a[^b]*b[^c]*c"), matched in C.
    subsequence = re.compile(
        "".join(f"[^{re.escape(c)}]*{re.escape(c)}" if i else re.escape(c) for i, c in enumerate(needle))
    )
    scored: list[tuple[int, int, str]] = []
    for path in paths:
        lowered = path.lower()
        if needle in lowered:
            basename = lowered[lowered.rfind("/") + 1 :]
            tier = 0 if basename.startswith(needle) or lowered.startswith(needle) else 1
        elif subsequence.search(lowered):
            tier = 2
        else:
            continue
        scored.append((tier, len(path), path))
    return [path for _, _, path in heapq.nsmallest(limit, scored)]


def match_commands(prefix: str) -> list[SlashCommand]:
    """Slash commands whose name starts with `prefix` (a leading "/" is ignored); an exact
    name comes first, the rest keep the table's order."""
    wanted = prefix.removeprefix("/").lower()
    matches = [command for command in SLASH_COMMANDS if command.name.startswith(wanted)]
    return sorted(matches, key=lambda command: command.name != wanted)


def command_label(command: SlashCommand) -> str:
    """How a command reads in the menu: "/name usage — help"."""
    usage = f" {command.usage}" if command.usage else ""
    return f"/{command.name}{usage} — {command.help}"
