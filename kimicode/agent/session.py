"""The session transcript: append-only JSONL, one record per line, flushed per record.

A torn last line (a process killed mid-write) is the only damage a crash can do;
loading skips it. Records: `meta` (first line), `message` (one history message),
`usage`, `compaction` (the whole history after compacting), `system` (a new system
prompt, on resume), `checkpoint` (a work-tree
snapshot and the history as it was then: its first `turn` messages), `rewind` (an undo:
the history goes back to what it was at `checkpoint`). Replaying them in order gives
the history; a rewind holds across compactions because it names the checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kimicode.paths import data_dir

log = logging.getLogger(__name__)


_SESSION_ID = re.compile(r"[0-9A-Za-z-]+")  # what new_session_id makes (a prefix of it is enough)


def new_session_id() -> str:
    # Sortable by creation time, unique without coordination.
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


class SessionError(Exception):
    """A session that cannot be found or read; the message is for the user."""


def sessions_dir() -> Path:
    return data_dir() / "sessions"


@dataclass(slots=True)
class SessionState:
    """A session replayed from its transcript."""

    id: str
    path: Path
    meta: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    usage: list[int] = field(default_factory=lambda: [0, 0, 0])  # prompt, completion, cached tokens
    cost_usd: float = 0.0
    updated: float = 0.0
    skipped_lines: int = 0  # damaged lines left out (a torn last line after a crash)
    checkpoints: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # id -> history then

    @property
    def first_prompt(self) -> str:
        return next((m["content"] for m in self.messages if m.get("role") == "user"), "")


class SessionLog:
    def __init__(self, session_id: str, path: Path):
        self.id = session_id
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        try:  # one writer per session: two runs appending to one history would corrupt it
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise SessionError(f"session {session_id} is in use by another kimicode process") from None

    @classmethod
    def create(cls, **meta: Any) -> SessionLog:
        session_id = new_session_id()
        log = cls(session_id, sessions_dir() / f"{session_id}.jsonl")
        log.append("meta", id=session_id, created=time.time(), **meta)
        return log

    @classmethod
    def reopen(cls, state: SessionState) -> SessionLog:
        """Append to an existing transcript, after its torn last line if it has one."""
        with state.path.open("rb") as f:
            f.seek(0, 2)
            torn = f.tell() > 0 and (f.seek(-1, 2), f.read(1))[1] != b"\n"
        log = cls(state.id, state.path)
        if torn:
            log._file.write("\n")
        log.append("resume", time=time.time())
        return log

    def append(self, record_type: str, **fields: Any) -> None:
        """Write one record. Never raises: a full disk must not stop the agent mid-turn."""
        if self._file.closed:
            return
        try:
            # ensure_ascii: lone surrogates (from argv or a model) survive as escapes.
            self._file.write(json.dumps({"type": record_type, **fields}, ensure_ascii=True) + "\n")
            self._file.flush()
        except (OSError, ValueError) as exc:
            log.warning("the session log %s stopped recording: %s", self.path, exc)
            with contextlib.suppress(OSError):
                self._file.close()

    def close(self) -> None:
        self._file.close()


def load_session(path: Path) -> SessionState:
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise SessionError(f"cannot read session {path}: {exc}") from None
    state = SessionState(path.stem, path, {}, updated=path.stat().st_mtime)
    for line in lines:
        if not line.strip():
            continue
        try:
            _replay(state, json.loads(line))
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):  # torn or foreign lines
            state.skipped_lines += 1
    if not state.meta:
        raise SessionError(f"{path} is not a kimicode session (no meta record)")
    return state


def _replay(state: SessionState, record: dict[str, Any]) -> None:
    match record.get("type"):
        case "meta":
            state.meta = record
        case "message":
            state.messages.append(record["message"])
        case "usage":
            state.usage = [a + b for a, b in zip(state.usage, record["usage"])]
            state.cost_usd += record.get("cost_usd", 0.0)
        case "compaction":
            state.messages = list(record["messages"])
        case "system":  # a resumed session got a fresh system prompt
            state.messages[0] = {"role": "system", "content": record["content"]}
        case "checkpoint":
            state.checkpoints[record["id"]] = state.messages[: record["turn"]]
        case "rewind":
            state.messages = list(state.checkpoints[record["checkpoint"]])


def find_session(session_id: str) -> SessionState:
    """A session by id or unique id prefix."""
    if not _SESSION_ID.fullmatch(session_id or ""):
        raise SessionError(f"{session_id!r} is not a session id; `kimicode sessions` lists them")
    matches = sorted(sessions_dir().glob(f"{session_id}*.jsonl"))
    if not matches:
        raise SessionError(f"no session {session_id!r}; `kimicode sessions` lists them")
    if len(matches) > 1:
        names = ", ".join(p.stem for p in matches[:5])
        raise SessionError(f"session id {session_id!r} is ambiguous: {names}")
    return load_session(matches[0])


def list_sessions(workspace: Path | None = None) -> list[SessionState]:
    """Sessions (of `workspace`, if given), most recently updated first; unreadable ones are skipped."""
    states = []
    for path in sessions_dir().glob("*.jsonl"):
        try:
            state = load_session(path)
        except SessionError:
            continue
        if workspace is None or state.meta.get("cwd") == str(workspace):
            states.append(state)
    return sorted(states, key=lambda s: s.updated, reverse=True)
