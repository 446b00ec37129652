"""Prompt history: what the user sent before, recalled with Up/Down in the prompt.

Stored as JSON Lines, one JSON string per line, so multi-line prompts survive. The
file is only ever appended to (flushed per entry); a torn or garbled line is skipped.
History is a convenience: when the file cannot be read or written it is kept in memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kimicode.paths import data_dir

MAX_ENTRIES = 1_000
_COMPACT_AFTER = 2 * MAX_ENTRIES  # lines in the file before it is rewritten to the last MAX_ENTRIES


def default_history_path() -> Path:
    return data_dir() / "prompt_history.jsonl"


class PromptHistory:
    def __init__(self, path: Path | None = None):
        self.path = path if path is not None else default_history_path()
        self._entries: list[str] = []
        self._needs_newline = False  # the file ends in a torn line: start the next entry on a fresh one
        self._writable = True
        self._load()

    @property
    def entries(self) -> tuple[str, ...]:
        """Oldest first."""
        return tuple(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, text: str) -> None:
        """Remember `text` unless it is blank or repeats the newest entry."""
        if not text.strip() or (self._entries and self._entries[-1] == text):
            return
        self._entries.append(text)
        del self._entries[:-MAX_ENTRIES]
        self._append(text)

    def _load(self) -> None:
        try:
            raw = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        lines = raw.splitlines()
        self._needs_newline = bool(raw) and not raw.endswith("\n")
        for line in lines:
            try:
                text = json.loads(line)
            except ValueError:
                continue
            if isinstance(text, str) and text.strip() and (not self._entries or self._entries[-1] != text):
                self._entries.append(text)
        del self._entries[:-MAX_ENTRIES]
        if len(lines) > _COMPACT_AFTER:
            self._rewrite()

    def _append(self, text: str) -> None:
        if not self._writable:
            return
        line = ("\n" if self._needs_newline else "") + json.dumps(text) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # 0600: prompts can hold pasted secrets
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as file:
                file.write(line)
                file.flush()
        except OSError:
            self._writable = False  # keep working in memory; don't retry on every prompt
            return
        self._needs_newline = False

    def _rewrite(self) -> None:
        # Replace, not truncate: a crash mid-write must not lose the whole history.
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.writelines(json.dumps(text) + "\n" for text in self._entries)
            os.replace(temporary, self.path)
            self._needs_newline = False
        except OSError:
            pass
