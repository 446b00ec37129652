"""--auto-commit: commit a finished task's changes on the current branch.

Only the task's own paths are staged and committed (other changes the user has staged
stay as they are); ignored files and paths that no longer exist anywhere are left out;
if the commit fails (a hook, no identity), what this staged is unstaged again. Paths go
to git on stdin, NUL-separated, so any number and any name works.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class CommitError(Exception):
    """The commit could not be made; the message is for the user."""


def commit_task(workspace: Path, files: list[str], task: str, result: str, session_id: str | None) -> str | None:
    """Commit `files` (workspace-relative; deletions included) with a message made from the
    task and the agent's answer. Returns the new commit's id, or None when nothing changed."""
    try:
        top = Path(_git(workspace, "rev-parse", "--show-toplevel").decode().strip())
        paths = _committable(top, [_relative_to(top, workspace, f) for f in files])
        if not paths:
            return None
        listing = b"\0".join(p.encode() for p in paths)
        _git(top, "add", "-A", "--pathspec-from-file=-", "--pathspec-file-nul", input=listing)
        staged = set(_git(top, "diff", "--cached", "--name-only", "-z", "--no-renames").decode().split("\0"))
        if staged.isdisjoint(paths):
            return None
        try:
            _git(top, "commit", "-q", "-m", _message(task, result, session_id), "--pathspec-from-file=-",
                 "--pathspec-file-nul", input=listing)
        except CommitError:
            _unstage(top, listing)
            raise
        return _git(top, "rev-parse", "HEAD").decode().strip()
    except OSError as exc:
        raise CommitError(f"auto-commit failed: {exc}") from None


def _relative_to(top: Path, workspace: Path, path: str) -> str:
    # Not Path.resolve(): a symlink the task created must be committed as the link itself.
    return os.path.relpath(os.path.join(os.path.realpath(workspace), path), os.path.realpath(top))


def _committable(top: Path, paths: list[str]) -> list[str]:
    """Paths inside the repository that exist on disk or in the index and are not ignored."""
    inside = [p for p in paths if not p.startswith("..")]
    if not inside:
        return []
    listing = b"\0".join(p.encode() for p in inside)
    ignored = set(_git(top, "check-ignore", "--stdin", "-z", input=listing, ok_codes=(0, 1)).decode().split("\0"))
    present = [p for p in inside if p not in ignored and os.path.lexists(top / p)]
    gone = [p for p in inside if p not in ignored and not os.path.lexists(top / p)]
    if gone:  # a deletion is committable only if git knew the file
        indexed = set(_git(top, "ls-files", "-z", "--cached").decode().split("\0"))
        present += [p for p in gone if p in indexed]
    return sorted(present)


def _unstage(top: Path, listing: bytes) -> None:
    has_head = _git(top, "rev-parse", "-q", "--verify", "HEAD", ok_codes=(0, 1)).strip()
    if has_head:
        _git(top, "reset", "-q", "--pathspec-from-file=-", "--pathspec-file-nul", input=listing, ok_codes=(0, 1))
    else:  # a repository with no commits yet: nothing to reset to
        _git(top, "rm", "-q", "-r", "--cached", "--ignore-unmatch", "--pathspec-from-file=-", "--pathspec-file-nul",
             input=listing, ok_codes=(0, 1))


def _git(cwd: Path, *args: str, input: bytes | None = None, ok_codes: tuple[int, ...] = (0,)) -> bytes:
    done = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, timeout=120)
    if done.returncode not in ok_codes:
        detail = (done.stderr or done.stdout).decode(errors="replace").strip()
        raise CommitError(f"auto-commit failed: git {args[0]}: {detail}")
    return done.stdout


def _message(task: str, result: str, session_id: str | None) -> str:
    subject = " ".join(task.split())
    subject = subject if len(subject) <= 64 else subject[:63] + "…"
    body = result.strip()
    body = body if len(body) <= 2_000 else body[:2_000] + "\n[…]"
    trailer = f"\n\nkimicode-session: {session_id}" if session_id else ""
    return f"kimicode: {subject}\n\n{body}{trailer}"
