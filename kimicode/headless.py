"""Headless front end: `kimicode --task …` for CI.

Machine output goes to stdout (`text`: the final answer; `json`: one object;
`stream-json`: one event per line ending with a `result` event); progress goes
to stderr. Nobody can answer approvals here, so requests are denied with a note
the model can act on.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, Literal, TextIO

from kimicode.agent.commit import CommitError, commit_task
from kimicode.agent.loop import Agent
from kimicode.changes import ChangeTracker
from kimicode.events import (
    Approval,
    ApprovalRequested,
    Decision,
    ErrorEvent,
    Event,
    Retrying,
    ToolCallFinished,
    ToolCallStarted,
    TurnFinished,
    event_to_json,
)

OutputFormat = Literal["text", "json", "stream-json"]

EXIT_SUCCESS, EXIT_FAILURE, EXIT_USAGE, EXIT_BUDGET, EXIT_CANCELLED, EXIT_BACKEND = 0, 1, 2, 3, 130, 75

_BUDGET_STOPS = {"max_steps", "max_cost", "max_tokens", "timeout", "loop"}


async def run_task(
    agent: Agent,
    task: str,
    output_format: OutputFormat,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    auto_commit: bool = False,
) -> int:
    """Run `task` to the end; write the result; return the process exit code.

    Cancelling the coroutine (SIGINT before or after the turn) still writes a result."""
    started = time.monotonic()
    usage_before, cost_before = agent.usage, agent.cost_usd  # a resumed session has spent some already
    finished = TurnFinished("cancelled", "cancelled by the user")
    error: ErrorEvent | None = None
    tracker: ChangeTracker | None = None
    try:
        tracker = await ChangeTracker.start(agent.ctx.workspace)
        async for event in agent.run(task):
            if isinstance(event, ApprovalRequested):
                event.reply.set_result(Approval(Decision.DENY, _NO_APPROVALS))
            if output_format == "stream-json":
                _write_line(out, event_to_json(event))
            else:
                _progress(err, event)
            if isinstance(event, ErrorEvent):
                error = event
            if isinstance(event, TurnFinished):
                finished = event
        changed = await tracker.changed()
    except asyncio.CancelledError:
        finished, changed = TurnFinished("cancelled", "cancelled by the user"), set()
    workspace = agent.ctx.workspace
    changed |= {workspace.relative(p) for p in agent.ctx.changed_files}
    status, code = _status(finished, error)
    commit = commit_error = None
    if auto_commit and status == "success":
        try:
            commit = commit_task(workspace.root, sorted(changed), task, finished.result,
                                 agent.session.id if agent.session else None)
        except CommitError as exc:  # the task is done, but CI asked for a commit it did not get
            commit_error, status, code = str(exc), "error", EXIT_FAILURE
            err.write(f"kimicode: {exc}\n")
    result = _result_record(status, finished.stop_reason, finished.result, files_changed=sorted(changed)) | {
        "session_id": agent.session.id if agent.session else None,
        "model": agent.backend.info.name,
        "num_steps": agent.steps,
        "duration_s": round(time.monotonic() - started, 3),
        "usage": {
            "prompt_tokens": agent.usage.prompt_tokens - usage_before.prompt_tokens,
            "completion_tokens": agent.usage.completion_tokens - usage_before.completion_tokens,
            "cached_tokens": agent.usage.cached_tokens - usage_before.cached_tokens,
        },
        "cost_usd": round(agent.cost_usd - cost_before, 6),
        "tests": agent.verifier.last.report() if agent.verifier and agent.verifier.last else None,
        "commit": commit,
        "commit_error": commit_error,
    }
    if output_format != "text":
        _write_line(out, result)
    elif status == "success":
        out.write(finished.result.rstrip("\n") + "\n")
        out.flush()
    elif error is None:  # an error event was already shown on stderr
        err.write(finished.result.rstrip("\n") + "\n")
        err.flush()
    return code


def write_setup_failure(output_format: OutputFormat, message: str, out: TextIO = sys.stdout) -> None:
    """A result object for machine formats when the run could not even start."""
    if output_format != "text":
        _write_line(out, _result_record("error", "error", message))


def _result_record(status: str, stop_reason: str, result: str, files_changed: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "result",
        "status": status,
        "stop_reason": stop_reason,
        "result": result,
        "session_id": None,
        "model": None,
        "num_steps": 0,
        "duration_s": 0.0,
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0},
        "cost_usd": 0.0,
        "files_changed": files_changed or [],
        "tests": None,
        "commit": None,
    }


_NO_APPROVALS = (
    "this is a non-interactive run, so nobody can approve it. Find another way, or tell the user "
    "to rerun with --approval-mode yolo or to allow it in .kimicode/config.toml [permissions] allow."
)


def _status(finished: TurnFinished, error: ErrorEvent | None) -> tuple[str, int]:
    reason = finished.stop_reason
    if reason == "end_turn":
        return "success", EXIT_SUCCESS
    if reason in _BUDGET_STOPS:
        return "budget_exceeded", EXIT_BUDGET
    if reason == "cancelled":
        return "cancelled", EXIT_CANCELLED
    kind = error.kind if error else ""
    return "error", {"config": EXIT_USAGE, "exhausted": EXIT_BACKEND}.get(kind, EXIT_FAILURE)


def _write_line(out: TextIO, data: dict[str, Any]) -> None:
    out.write(json.dumps(data, ensure_ascii=False) + "\n")
    out.flush()


def _progress(err: TextIO, event: Event) -> None:
    """One short stderr line per notable event, for humans watching a CI log."""
    match event:
        case ToolCallStarted(title=title):
            line = f"→ {title}"
        case ToolCallFinished(is_error=True, output=output):
            line = f"  ✗ {output.splitlines()[0] if output else 'failed'}"
        case Retrying(attempt=attempt, delay=delay, reason=reason):
            line = f"  model call failed ({reason}); retry {attempt} in {delay:.1f} s"
        case ErrorEvent(message=message):
            line = f"error: {message}"
        case _:
            return
    err.write(line[:300] + "\n")
    err.flush()
