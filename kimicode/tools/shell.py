"""The shell tool: run a bash command in the workspace, streaming its output.

The command gets its own process group, so a timeout or a cancelled turn stops it
together with every process it started. Whether a command may run at all is the
approval policy's business, decided before the tool is called.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
from collections.abc import Callable

from pydantic import Field

from kimicode.events import ToolOutput
from kimicode.tools.base import Params, Tool, ToolContext, ToolError, ToolResult

MAX_TIMEOUT_S = 600.0
KILL_GRACE_S = 2.0  # between SIGTERM and SIGKILL
DETACH_GRACE_S = 0.5  # how long background jobs may hold the output open once bash has exited
HEAD_BYTES = 15_000  # the model sees the first and last bytes of long output
TAIL_BYTES = 15_000
READ_CHUNK_BYTES = 65_536
LIVE_OUTPUT_BYTES = 256 * 1024  # per command, for ToolOutput events
POLL_S = 0.02
ENV_OVERRIDES = {"PAGER": "cat", "GIT_PAGER": "cat", "TERM": "dumb"}
# Inherited, these would make `cd x` or bash's start-up run somewhere the policy did not check.
ENV_REMOVED = ("CDPATH", "BASH_ENV", "ENV")


class ShellParams(Params):
    command: str = Field(description="The command line, run with `bash -c`.")
    timeout: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIMEOUT_S,
        description="Seconds before the command is stopped; defaults to the session's shell timeout (at most 600).",
    )
    cwd: str = Field(default=".", description="Directory to run in, relative to the workspace root.")


class Shell(Tool[ShellParams]):
    """Run a bash command in the workspace and return its output and exit code.

    stdout and stderr are merged. There is no stdin: pass flags such as --yes, and
    avoid interactive programs, editors and pagers. Output over 30 KB is cut in the
    middle, keeping its start and end. A non-zero exit code is reported, not treated
    as a tool failure. At the timeout the command and all its child processes are
    stopped. Background jobs are stopped when the command ends unless their output
    is redirected, e.g. `server > server.log 2>&1 &`.

    Prefer read_file, grep, glob, list_dir and the edit tools to cat, grep, find,
    ls and sed.
    """

    name = "shell"
    kind = "execute"
    Params = ShellParams

    def title(self, params: ShellParams) -> str:
        first_line, *more = params.command.strip().splitlines() or [""]
        text = first_line + (" …" if more else "")
        return "$ " + (text if len(text) <= 80 else text[:79] + "…")

    async def run(self, params: ShellParams, ctx: ToolContext) -> ToolResult:
        cwd = ctx.workspace.resolve(params.cwd)
        if not cwd.is_dir():
            raise ToolError(f"cwd {params.cwd} is not a directory")
        timeout = min(params.timeout or ctx.shell_timeout, MAX_TIMEOUT_S)
        if ctx.terminal is not None:  # an editor's terminal (ACP terminal/*) runs it
            run = await ctx.terminal.run(params.command, cwd, timeout, ctx.call_id, ENV_OVERRIDES)
            output = HeadTail(HEAD_BYTES, TAIL_BYTES)
            output.add(run.output.encode("utf-8", errors="replace"))
            if run.timed_out:
                footer = f"[timed out after {timeout:g} s; the command was stopped]"
                return _result(params.command, output, run.exit_code, footer, is_error=True)
            cut = "[the terminal kept only the end of the output]\n" if run.truncated else ""
            return _result(params.command, output, run.exit_code, f"{cut}[exit code {run.exit_code}]")
        output = HeadTail(HEAD_BYTES, TAIL_BYTES)
        process = await _start(params.command, cwd)
        assert process.stdout is not None
        reader = asyncio.create_task(
            _read_stream(process.stdout, output, lambda text: ctx.emit(ToolOutput(ctx.call_id, text)))
        )
        try:
            return await _supervise(process, reader, output, params.command, timeout)
        except asyncio.CancelledError:
            await stop_process_group(process)
            raise
        finally:
            reader.cancel()


async def _start(command: str, cwd: os.PathLike[str]) -> asyncio.subprocess.Process:
    starting = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            cwd=cwd,
            env={k: v for k, v in os.environ.items() if k not in ENV_REMOVED} | ENV_OVERRIDES,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    )
    try:
        return await asyncio.shield(starting)
    except OSError as exc:
        raise ToolError(f"could not start bash: {exc}") from None
    except asyncio.CancelledError:
        # Cancelled while asyncio was still wiring up the pipes: the command may already
        # run. Let the start finish, then stop the group; asyncio alone would wait for it.
        with contextlib.suppress(OSError):
            await stop_process_group(await starting)
        raise


async def _supervise(
    process: asyncio.subprocess.Process, reader: asyncio.Task[None], output: HeadTail, command: str, timeout: float
) -> ToolResult:
    exit_code = await _exit_code(process, timeout)
    if exit_code is None:
        await stop_process_group(process)
        await asyncio.wait({reader}, timeout=DETACH_GRACE_S)
        footer = f"[timed out after {timeout:g} s; the command and its child processes were stopped]"
        return _result(command, output, process.returncode, footer, is_error=True)
    footer = f"[exit code {exit_code}]"
    done, _ = await asyncio.wait({reader}, timeout=DETACH_GRACE_S)
    if not done:
        # bash has exited but jobs it put in the background still hold the output pipe.
        await stop_process_group(process)
        await asyncio.wait({reader}, timeout=DETACH_GRACE_S)
        footer = f"[background processes still attached to the output were stopped]\n{footer}"
    return _result(command, output, exit_code, footer)


def _result(command: str, output: HeadTail, exit_code: int | None, footer: str, is_error: bool = False) -> ToolResult:
    text = output.text()
    body = text.rstrip("\n") or "(no output)"
    return ToolResult(
        f"{body}\n{footer}",
        is_error=is_error,
        display={"command": command, "exit_code": exit_code, "output": text},
    )


async def _exit_code(process: asyncio.subprocess.Process, timeout: float) -> int | None:
    """bash's exit code, or None at the timeout. Not `process.wait()`: that also waits
    for the output pipe to close, which a background job can keep open for ever."""
    await _poll(lambda: process.returncode is not None, timeout)
    return process.returncode


async def _read_stream(stream: asyncio.StreamReader, output: HeadTail, emit: Callable[[str], None]) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := await stream.read(READ_CHUNK_BYTES):
        shown = output.total
        output.add(chunk)
        if shown >= LIVE_OUTPUT_BYTES:
            continue  # live views (TUI, stream-json) get a bounded amount, like the model
        if text := decoder.decode(chunk[: LIVE_OUTPUT_BYTES - shown]):
            emit(text)
        if output.total >= LIVE_OUTPUT_BYTES:
            emit(f"\n[live output stops here after {LIVE_OUTPUT_BYTES // 1024} KB; the command keeps running]\n")


class HeadTail:
    """Keeps the first and the last bytes of a stream and counts what falls between,
    so a command printing gigabytes costs little memory."""

    def __init__(self, head_limit: int, tail_limit: int):
        self.head_limit, self.tail_limit = head_limit, tail_limit
        self.head, self.tail = bytearray(), bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        del self.tail[: -self.tail_limit]

    def text(self) -> str:
        cut = self.total - len(self.head) - len(self.tail)
        if not cut:
            return (self.head + self.tail).decode("utf-8", errors="replace")
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        return f"{head}\n[... {cut} bytes cut from the middle of the output ...]\n{tail}"


async def stop_process_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the command's whole group, give it KILL_GRACE_S to exit, then SIGKILL
    whatever is left."""
    pgid = process.pid  # bash leads its own group (start_new_session)
    try:
        _signal_group(pgid, signal.SIGTERM)
        await _poll(lambda: not _group_alive(pgid), KILL_GRACE_S)
    finally:
        # Also when cancelled again while waiting: no process may outlive the call.
        _signal_group(pgid, signal.SIGKILL)
    await _poll(lambda: process.returncode is not None, KILL_GRACE_S)


async def _poll(condition: Callable[[], bool], timeout: float) -> None:
    """Check `condition` until it holds or `timeout` seconds pass: every millisecond at
    first, backing off to every POLL_S, so quick commands return quickly."""
    deadline = asyncio.get_running_loop().time() + timeout
    delay = 0.001
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(delay)
        delay = min(delay * 2, POLL_S)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # killpg also counts zombies, which a container's init can be slow to reap; on
    # Linux, /proc tells which members still run.
    return _live_members_in_proc(pgid) if os.path.isdir("/proc/self") else True


def _live_members_in_proc(pgid: int) -> bool:
    with os.scandir("/proc") as entries:
        pids = [entry.name for entry in entries if entry.name.isdigit()]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
                state, _, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue
        if int(pgrp) == pgid and state != "Z":
            return True
    return False
