"""--auto-commit: commit a finished task's changes on the current branch."""

from __future__ import annotations

from pathlib import Path


class CommitError(Exception):
    """The commit could not be made; the message is for the user."""


def commit_task(workspace: Path, files: list[str], task: str, result: str, session_id: str | None) -> str | None:
    """Commit `files` (workspace-relative; deletions included) with a message made from the
    task and the agent's answer. Returns the new commit's id, or None when nothing changed."""
    import git  # gitpython: loaded only when committing

    try:
        repo = git.Repo(workspace, search_parent_directories=True)
        top = Path(repo.working_tree_dir or workspace)
        paths = [str((workspace / f).resolve().relative_to(top.resolve())) for f in files]
        if not paths:
            return None
        repo.git.add("-A", "--", *paths)
        if not repo.git.diff("--cached", "--name-only", "--", *paths):
            return None
        repo.git.commit("-m", _message(task, result, session_id), "--", *paths)
        return repo.head.commit.hexsha
    except (git.GitCommandError, git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError) as exc:
        raise CommitError(f"auto-commit failed: {str(exc).strip()}") from None


def _message(task: str, result: str, session_id: str | None) -> str:
    subject = " ".join(task.split())
    subject = subject if len(subject) <= 64 else subject[:63] + "…"
    body = result.strip()
    body = body if len(body) <= 2_000 else body[:2_000] + "\n[…]"
    trailer = f"\n\nkimicode-session: {session_id}" if session_id else ""
    return f"kimicode: {subject}\n\n{body}{trailer}"
