"""`@path` mentions in a prompt: the files' current contents go along with it, so the
model need not spend a step reading what the user pointed at."""

from __future__ import annotations

import re

from kimicode.workspace import PathError, Workspace

MAX_FILE_BYTES = 100_000  # per mentioned file; larger files are cut (the model can read the rest)
MAX_FILES = 10
MAX_LISTING = 200  # entries shown for a mentioned folder
HEADER = "\n\nFiles the user mentioned, as they are now:\n"

# An @ at the start or after whitespace (so mail addresses are not mentions).
_MENTION = re.compile(r"(?:(?<=\s)|^)@([^\s@]+)")
_TRAILING = ",.;:!?)]}'\""


def mentioned_paths(prompt: str) -> list[str]:
    """The `@path` tokens of `prompt`, in order, without duplicates or trailing punctuation."""
    found: list[str] = []
    for match in _MENTION.finditer(prompt):
        path = match.group(1).rstrip(_TRAILING)
        if path and path not in found:
            found.append(path)
    return found


def expand_mentions(prompt: str, workspace: Workspace) -> str:
    """`prompt` followed by the contents of the files (or listings of the folders) it
    mentions; mentions of things that do not exist stay plain text."""
    blocks = []
    for path in mentioned_paths(prompt)[:MAX_FILES]:
        try:
            resolved = workspace.resolve(path)
        except PathError:
            continue
        rel = workspace.relative(resolved)
        try:
            if resolved.is_file():
                with resolved.open("rb") as f:
                    blocks.append(_file_block(rel, f.read(MAX_FILE_BYTES + 1)))
            elif resolved.is_dir():
                blocks.append(_folder_block(rel, sorted(p.name + "/" * p.is_dir() for p in resolved.iterdir())))
        except OSError:  # unreadable: the mention stays text and the model can try itself
            continue
    if not blocks:
        return prompt
    return prompt + HEADER + "\n".join(blocks)


def _folder_block(rel: str, entries: list[str]) -> str:
    more = f"\n… {len(entries) - MAX_LISTING} more" if len(entries) > MAX_LISTING else ""
    return f'<folder path="{rel}">\n' + "\n".join(entries[:MAX_LISTING]) + more + "\n</folder>"


def _file_block(rel: str, data: bytes) -> str:
    if b"\0" in data[:8192]:
        return f'<file path="{rel}">(binary file, not shown)</file>'
    cut = len(data) > MAX_FILE_BYTES
    text = data[:MAX_FILE_BYTES].decode("utf-8", errors="replace")
    note = f"\n… cut at {MAX_FILE_BYTES} bytes; read_file shows the rest" if cut else ""
    return f'<file path="{rel}">\n{text.rstrip(chr(10))}{note}\n</file>'
