"""Shell commands in the editor's terminal (ACP `terminal/*`), when it offers one: the user
watches them run where they work, and the editor owns the process."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import acp
from acp.schema import EnvVariable

OUTPUT_LIMIT = 30_000  # bytes the editor keeps (as much as the model is shown)


@dataclass(frozen=True, slots=True)
class TerminalRun:
    output: str
    exit_code: int | None
    timed_out: bool
    truncated: bool


class EditorTerminal:
    def __init__(self, conn: Any, session_id: str) -> None:
        self.conn = conn
        self.session_id = session_id
        self.terminal_of: dict[str, str] = {}  # tool call id -> the terminal it ran in

    async def run(self, command: str, cwd: Path, timeout: float, call_id: str, env: dict[str, str]) -> TerminalRun:
        created = await self.conn.create_terminal(
            session_id=self.session_id, command="bash", args=["-c", command], cwd=str(cwd),
            env=[EnvVariable(name=k, value=v) for k, v in env.items()], output_byte_limit=OUTPUT_LIMIT,
        )
        terminal = created.terminal_id
        self.terminal_of[call_id] = terminal
        sid = self.session_id
        try:
            # The tool call shows the live terminal.
            await self.conn.session_update(session_id=sid, update=acp.update_tool_call(
                call_id, content=[acp.tool_terminal_ref(terminal)]))
            code, timed_out = None, False
            try:
                async with asyncio.timeout(timeout):
                    code = (await self.conn.wait_for_terminal_exit(session_id=sid, terminal_id=terminal)).exit_code
            except TimeoutError:
                timed_out = True
                await self.conn.kill_terminal(session_id=sid, terminal_id=terminal)
            result = await self.conn.terminal_output(session_id=sid, terminal_id=terminal)
            return TerminalRun(result.output, code, timed_out, result.truncated)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.conn.kill_terminal(session_id=sid, terminal_id=terminal))
            raise
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.conn.release_terminal(session_id=sid, terminal_id=terminal))
