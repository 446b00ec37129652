"""Undo: put the work tree back to a checkpoint and rewind the conversation to match."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kimicode.agent.checkpoints import Checkpoint, CheckpointError, CheckpointStore
from kimicode.agent.loop import TURN_LABEL
from kimicode.agent.session import SessionLog, list_sessions

if TYPE_CHECKING:
    from kimicode.agent.loop import Agent

UNDO_LABEL = "before undo to "  # what CheckpointStore.restore names the state it replaces


@dataclass(frozen=True, slots=True)
class UndoResult:
    restored: Checkpoint
    saved: Checkpoint  # the state before the undo, so it can be undone too
    session_id: str | None  # the session whose conversation was rewound
    history_length: int | None


def default_target(store: CheckpointStore) -> Checkpoint:
    """Before the most recent turn; after an undo, the turn before the one it went back to,
    so repeating `kimicode undo` keeps stepping back."""
    checkpoints = store.list()
    turns = [cp for cp in checkpoints if cp.label.startswith(TURN_LABEL)]
    if not turns:
        raise CheckpointError("no checkpoint of a turn yet: kimicode has not run in this workspace")
    if checkpoints[0].label.startswith(UNDO_LABEL):
        undone_to = checkpoints[0].label.removeprefix(UNDO_LABEL)
        older = [cp for cp in turns if cp.created < checkpoints[0].created and cp.label == undone_to]
        if older and (earlier := [cp for cp in turns if cp.created < older[0].created]):
            return earlier[0]
        if older:
            raise CheckpointError("already at the oldest turn of this workspace")
    return turns[0]


def undo(workspace: Path, ref: str | None = None) -> UndoResult:
    """Restore the checkpoint `ref` (default: see `default_target`) byte for byte, and
    rewind the session that made it to the conversation as it was then."""
    store = CheckpointStore.for_workspace(workspace)
    checkpoint = store.get(ref) if ref else default_target(store)
    session = next((s for s in list_sessions(workspace) if checkpoint.id in s.checkpoints), None)
    log = SessionLog.reopen(session) if session else None  # raises while another run uses it
    saved = store.restore(checkpoint, turn=len(session.messages) if session else 0)
    if session is None or log is None:
        return UndoResult(checkpoint, saved, None, None)
    # The state undone is itself a checkpoint of the conversation, so this undo can be undone.
    log.append("checkpoint", id=saved.id, label=saved.label, turn=len(session.messages))
    log.append("rewind", checkpoint=checkpoint.id)
    log.close()
    return UndoResult(checkpoint, saved, session.id, len(session.checkpoints[checkpoint.id]))


def undo_last_turn(agent: Agent) -> UndoResult:
    """In-process undo for an interactive session: put the files back to before this
    process's latest turn not yet undone and rewind the agent's history to match.

    The session log records it like `kimicode undo` does, so a resume sees the same history."""
    if agent.busy:
        raise CheckpointError("a turn is running; interrupt it first")
    if agent.checkpoints is None:
        raise CheckpointError("checkpoints are off (checkpoints = false), so there is nothing to undo")
    if not agent.turn_checkpoints:
        raise CheckpointError("nothing to undo in this session yet")
    checkpoint_id, history = agent.turn_checkpoints.pop()
    checkpoint = agent.checkpoints.get(checkpoint_id)
    saved = agent.checkpoints.restore(checkpoint, turn=len(agent.messages))
    if agent.session:
        agent.session.append("checkpoint", id=saved.id, label=saved.label, turn=len(agent.messages))
        agent.session.append("rewind", checkpoint=checkpoint.id)
    agent.rewind(history)
    return UndoResult(checkpoint, saved, agent.session.id if agent.session else None, len(history))
