"""Project instructions from AGENTS.md files.

The root AGENTS.md goes into the system prompt. An AGENTS.md further down applies to
the files below it (the nearest one wins): it is shown to the model, once, with the
result of the first tool call that touches a path under its folder.
"""

from __future__ import annotations

from pathlib import Path

from kimicode.workspace import PathError, Workspace

FILENAME = "AGENTS.md"
MAX_CHARS = 20_000  # an instructions file is guidance, not a document to ingest whole


class ProjectInstructions:
    def __init__(self, workspace: Workspace):
        self._workspace = workspace
        self._shown: set[Path] = {workspace.root}  # the root file is in the system prompt

    def forget(self) -> None:
        """Show nested instructions again (after a compaction may have dropped them)."""
        self._shown = {self._workspace.root}

    def root(self) -> str:
        text = self._read(self._workspace.root)
        return f"\n# Project instructions (AGENTS.md)\n{text}\n" if text else ""

    def for_path(self, path: str) -> str:
        """Instructions from AGENTS.md files between the root and `path` not shown yet,
        outermost first."""
        try:
            target = self._workspace.resolve(path)
        except PathError:
            return ""
        folder = target if target.is_dir() else target.parent
        notes = []
        for directory in reversed([folder, *folder.parents]):
            if directory == self._workspace.root or self._workspace.root not in directory.parents:
                continue
            if directory in self._shown:
                continue
            self._shown.add(directory)
            if text := self._read(directory):
                rel = self._workspace.relative(directory)
                notes.append(
                    f"[Instructions from {rel}/{FILENAME}; they apply to files under {rel}/ and win over "
                    f"instructions from folders above it:]\n{text}"
                )
        return "\n\n".join(notes)

    def _read(self, directory: Path) -> str:
        try:  # through the guard: an AGENTS.md symlink must not pull in files from elsewhere
            path = self._workspace.resolve(self._workspace.relative(directory / FILENAME))
            text = path.read_text(encoding="utf-8", errors="replace").strip()
        except (PathError, OSError):
            return ""
        return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + "\n[... cut ...]"
