"""Undo: put the work tree back to a checkpoint and rewind the conversation to match."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kimicode.agent.checkpoints import Checkpoint, CheckpointError, CheckpointStore
from kimicode.agent.session import SessionLog, list_sessions

TURN_LABEL = "before: "  # checkpoints taken at the start of a turn


@dataclass(frozen=True, slots=True)
class UndoResult:
    restored: Checkpoint
    saved: Checkpoint  # the state before the undo, so it can be undone too
    session_id: str | None  # the session whose conversation was rewound
    history_length: int | None


def last_turn(store: CheckpointStore) -> Checkpoint:
    """The checkpoint taken before the most recent turn."""
    for checkpoint in store.list():
        if checkpoint.label.startswith(TURN_LABEL):
            return checkpoint
    raise CheckpointError("no checkpoint of a turn yet: kimicode has not run in this workspace")


def undo(workspace: Path, ref: str | None = None) -> UndoResult:
    """Restore the checkpoint `ref` (default: before the last turn) byte for byte, and
    rewind the session that made it to the conversation as it was then."""
    store = CheckpointStore.for_workspace(workspace)
    checkpoint = store.get(ref) if ref else last_turn(store)
    session = next((s for s in list_sessions(workspace) if checkpoint.id in s.checkpoints), None)
    saved = store.restore(checkpoint, turn=len(session.messages) if session else 0)
    if session is None:
        return UndoResult(checkpoint, saved, None, None)
    length = session.checkpoints[checkpoint.id]
    log = SessionLog.reopen(session)
    log.append("rewind", length=length)
    log.close()
    return UndoResult(checkpoint, saved, session.id, length)
