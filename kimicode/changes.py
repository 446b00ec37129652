"""Which files a run changed, shell side effects included.

In a git work tree `git status` does the walking (fast, honours .gitignore) and only
files it lists are stat-ed, so a file that was already dirty and changed again still
counts. Elsewhere a stat walk of the workspace, capped so a run started in a huge
folder does not crawl it.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from kimicode.workspace import Workspace

MAX_WALKED_FILES = 50_000

Snapshot = dict[str, tuple[str, int, int] | None]  # relative path -> (git status, mtime_ns, size)


class ChangeTracker:
    def __init__(self, workspace: Workspace, before: Snapshot | None):
        self._workspace = workspace
        self._before = before

    @classmethod
    async def start(cls, workspace: Workspace) -> ChangeTracker:
        return cls(workspace, await asyncio.to_thread(_snapshot, workspace))

    async def changed(self) -> set[str]:
        """Paths created, modified or deleted since `start` (empty if unknowable)."""
        if self._before is None:
            return set()
        after = await asyncio.to_thread(_snapshot, self._workspace)
        if after is None:
            return set()
        return {path for path in self._before.keys() | after.keys() if self._before.get(path) != after.get(path)}


def _snapshot(workspace: Workspace) -> Snapshot | None:
    statuses = _git_status(workspace.root)
    if statuses is None:
        return _walk(workspace)
    snapshot: Snapshot = {}
    for rel, status in statuses.items():
        stamp = _stamp(workspace.root / rel)
        snapshot[rel] = (status, *stamp) if stamp else (status, -1, -1)
    return snapshot


def _git_status(root: Path) -> dict[str, str] | None:
    """{path relative to root: two-letter status} for every non-clean path, or None
    outside a git work tree."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True, timeout=30)
        if top.returncode != 0:
            return None
        listing = subprocess.run(
            # --no-optional-locks: status must not refresh (rewrite) the user's index.
            ["git", "--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames",
             "--", "."],
            cwd=root, capture_output=True, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listing.returncode != 0:
        return None
    toplevel = Path(top.stdout.strip())
    statuses = {}
    for entry in listing.stdout.decode("utf-8", errors="surrogateescape").split("\0"):
        if len(entry) > 3:
            path = toplevel / entry[3:]
            try:
                statuses[path.relative_to(root).as_posix()] = entry[:2]
            except ValueError:
                continue  # outside the workspace (a workspace below the repository root)
    return statuses


def _walk(workspace: Workspace) -> Snapshot | None:
    snapshot: Snapshot = {}
    for count, path in enumerate(workspace.iter_files()):
        if count >= MAX_WALKED_FILES:
            return None
        stamp = _stamp(path)
        if stamp:
            snapshot[workspace.relative(path)] = ("", *stamp)
    return snapshot


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
