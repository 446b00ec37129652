"""Branch and dirty state for the status bar (plain git, never taking the index lock)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git_state(root: Path) -> tuple[str | None, bool]:
    """(branch, has uncommitted changes); (None, False) outside a repository or without git.
    A detached HEAD shows as its short sha."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(name, None)

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.decode("utf-8", "replace").strip() if done.returncode == 0 else None

    branch = git("symbolic-ref", "--short", "-q", "HEAD") or git("rev-parse", "--short", "HEAD")
    if branch is None:
        if git("rev-parse", "--git-dir") is None:
            return None, False
        branch = "(no commits)"
    status = git("status", "--porcelain", "--untracked-files=normal")
    return branch, bool(status)
