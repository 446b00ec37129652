"""Connections to the configured MCP servers, and their tools as kimicode tools.

The SDK's transports and ClientSession are anyio context managers that one task
must both enter and exit, while kimicode starts and closes the hub from whatever
tasks it likes (an ACP request handler, then a shutdown path). So each server
gets a long-lived task of its own that connects, lists the tools, waits for
`close()` and then disconnects; tool calls from other tasks go through its
session, which works across tasks.

The SDK is imported only when a server is configured: it takes about a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

from kimicode.config import McpServerSettings
from kimicode.mcp_tools.tool import McpTool, tool_name
from kimicode.tools.base import Tool, ToolError

log = logging.getLogger(__name__)

# A stdio server gets 2 s to exit once its stdin closes, then SIGTERM and 2 s more
# before SIGKILL (the SDK's shutdown); this leaves room for that.
CLOSE_TIMEOUT = 8.0
# Past a timeout the task is given this long to notice before it is abandoned.
GRACE = 5.0
_MAX_PAGES = 100  # of tools/list: a server that never stops paging is cut off here
_STDERR_TAIL = 300  # characters of a server's stderr quoted in an error


class McpConnection:
    """One server: the task that holds its connection, its session while connected,
    the tools it listed, and why it failed if it did."""

    def __init__(self, name: str, settings: McpServerSettings, cwd: Path | None):
        self.name = name
        self.settings = settings
        self.cwd = cwd
        self.specs: list[Any] = []  # mcp.types.Tool, as listed
        self.error: str | None = None  # why it could not start, or why it stopped
        self._session: Any = None  # mcp.ClientSession while connected
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stderr: IO[str] | None = None
        self._http_status = ""  # the last HTTP error status, for error messages

    async def start(self) -> None:
        """Connect and list the tools; on failure `error` says why. Never raises."""
        self._task = asyncio.create_task(self._run(), name=f"mcp server {self.name}")
        try:  # _run bounds its own startup; this is the backstop should it not
            await asyncio.wait_for(self._ready.wait(), self.settings.startup_timeout + GRACE)
        except TimeoutError:
            self.error = self.error or self._startup_timeout()
            await self.close()
        except asyncio.CancelledError:  # the caller gave up: leave no server running
            await asyncio.shield(self.close())
            raise

    async def close(self) -> None:
        self._stop.set()
        task = self._task
        if task is None or task.done():
            return
        await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=GRACE)
            if not task.done():
                log.warning("MCP server %s did not shut down; abandoning it", self.name)

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """The server's CallToolResult; ToolError when there is none to give."""
        from mcp import MCPError
        from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT

        session = self._session
        if session is None:
            raise ToolError(f"MCP server {self.name} is not connected: {self.error or 'kimicode closed it'}")
        timeout = self.settings.timeout
        self._http_status = ""
        try:
            # The SDK's read timeout also tells the server to stop; ours is the backstop.
            async with asyncio.timeout(timeout + GRACE):
                return await session.call_tool(tool, arguments, read_timeout_seconds=timeout)
        except TimeoutError:
            raise ToolError(self._timed_out(tool)) from None
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise ToolError(self._timed_out(tool)) from None
            if exc.code == CONNECTION_CLOSED and self._stop.is_set():
                raise ToolError(f"MCP server {self.name} was disconnected: kimicode closed it") from None
            if exc.code == CONNECTION_CLOSED:
                self.error = self.error or f"the connection closed{self._stderr_tail()}"
                raise ToolError(
                    f"MCP server {self.name} closed the connection (did it exit?){self._stderr_tail()}; "
                    "its tools are unavailable for the rest of this session"
                ) from None
            status = f" ({self._http_status})" if self._http_status else ""
            raise ToolError(f"MCP server {self.name} refused the call: {exc.message}{status}") from None
        except RuntimeError as exc:  # e.g. structured content that breaks the tool's output schema
            raise ToolError(f"MCP server {self.name}: {exc}") from None

    async def _run(self) -> None:
        import anyio
        from mcp import ClientSession

        try:
            async with self._transport() as (read, write), ClientSession(read, write) as session:
                with anyio.fail_after(self.settings.startup_timeout):
                    await session.initialize()
                    self.specs = await _list_tools(session)
                self._session = session
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:  # a failing server must not take the session with it
            self.error = self.error or self._describe(exc)
            log.info("MCP server %s: %s", self.name, self.error, exc_info=exc)
        finally:
            self._session = None
            self._ready.set()
            if self._stderr is not None:
                self._stderr.close()

    def _value(self, value: str, where: str) -> str:
        # Only the user's own config may pull kimicode's environment (keys!) into a server.
        return _expand(value, where) if self.settings.expand_env else value

    @asynccontextmanager
    async def _transport(self) -> AsyncIterator[tuple[Any, Any]]:
        settings = self.settings
        if settings.url is not None:
            import httpx2  # the HTTP client the SDK's transport takes
            from mcp.client.streamable_http import streamable_http_client

            headers = {key: self._value(value, f"headers.{key}") for key, value in settings.headers.items()}
            # The SDK's own defaults: reads may wait long, since a server can hold a stream open.
            timeout = httpx2.Timeout(30.0, read=300.0)

            async def note_status(response: httpx2.Response) -> None:
                # The SDK reports any HTTP error as one generic message; a 401 needs saying.
                if response.status_code >= 400:
                    self._http_status = f"HTTP {response.status_code} {response.reason_phrase}".strip()

            hooks = {"response": [note_status]}
            async with (
                httpx2.AsyncClient(headers=headers, timeout=timeout, event_hooks=hooks) as client,
                streamable_http_client(settings.url, http_client=client) as streams,
            ):
                yield streams
        else:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            assert settings.command is not None
            cwd = self._working_folder()
            env = {key: self._value(value, f"env.{key}") for key, value in settings.env.items()}
            # stderr goes to a file: it must not reach the terminal, and its end explains a crash.
            self._stderr = tempfile.TemporaryFile("w+", prefix=f"kimicode-mcp-{self.name}-")
            command = os.path.expanduser(settings.command)
            params = StdioServerParameters(command=command, args=settings.args, env=env or None, cwd=cwd)
            async with stdio_client(params, errlog=self._stderr) as streams:
                yield streams

    def _working_folder(self) -> Path | None:
        folder = self.settings.cwd
        if folder is None:
            return self.cwd
        path = Path(os.path.expanduser(folder))
        path = (self.cwd / path) if self.cwd is not None and not path.is_absolute() else path
        if not path.is_dir():
            raise _StartError(f"working folder {path} does not exist")
        return path

    def _describe(self, exc: BaseException) -> str:
        """One line on why the server failed to start."""
        from mcp import MCPError
        from mcp.types import CONNECTION_CLOSED

        exc = _first_leaf(exc)
        command = self.settings.command
        if isinstance(exc, _StartError):
            return str(exc)
        if isinstance(exc, TimeoutError):
            return self._startup_timeout()
        if isinstance(exc, FileNotFoundError) and command:
            return f"command not found: {command}"
        if isinstance(exc, PermissionError) and command:
            return f"cannot run {command}: permission denied"
        if isinstance(exc, OSError) and command:
            return f"cannot start {command}: {exc.strerror or exc}"
        if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
            what = "the server exited during startup" if command else "the server closed the connection"
            return f"{what}{self._stderr_tail()}"
        if isinstance(exc, MCPError):
            status = f" ({self._http_status})" if self._http_status else ""
            return f"the server answered with an error: {exc.message}{status}"
        if self.settings.url is not None and type(exc).__module__.startswith("httpx"):
            return f"cannot reach {self.settings.url}: {exc or type(exc).__name__}"
        return f"{type(exc).__name__}: {exc}"

    def _startup_timeout(self) -> str:
        seconds = self.settings.startup_timeout
        return f"timed out after {seconds:g} s starting and listing its tools{self._stderr_tail()}"

    def _timed_out(self, tool: str) -> str:
        seconds = self.settings.timeout
        return f"{self.name}: {tool} timed out after {seconds:g} s (raise [mcp_servers.{self.name}] timeout)"

    def _stderr_tail(self) -> str:
        """"; stderr: <its last lines>", or "" when it printed nothing (or is gone)."""
        stderr = self._stderr
        if stderr is None or stderr.closed:
            return ""
        try:
            stderr.flush()
            fd = stderr.fileno()
            size = os.fstat(fd).st_size
            tail = os.pread(fd, 4096, max(0, size - 4096)).decode(errors="replace")
        except OSError:
            return ""
        tail = " | ".join(line.strip() for line in tail.splitlines() if line.strip())[-_STDERR_TAIL:]
        return f"; stderr: {tail}" if tail else ""


class McpHub:
    """The configured MCP servers' tools; servers that failed are in `errors`."""

    def __init__(self, connections: list[McpConnection]):
        self._connections = connections
        self.tools: list[Tool[Any]] = []
        taken: set[str] = set()
        for connection in connections:
            for spec in connection.specs:
                name = tool_name(connection.name, spec.name, taken)
                taken.add(name)
                self.tools.append(McpTool(name, connection.name, spec, connection.call))
        self._closed = False

    @classmethod
    async def start(cls, servers: Mapping[str, McpServerSettings], *, cwd: Path | None = None) -> McpHub:
        """Start every enabled server at once and wait until each is up or has failed.

        `cwd`: where stdio servers run (the workspace), and what a relative `cwd` setting
        is relative to. Never raises for a server: see `errors`."""
        connections = [McpConnection(name, s, cwd) for name, s in servers.items() if s.enabled]
        await asyncio.gather(*(connection.start() for connection in connections))
        return cls(connections)

    @property
    def errors(self) -> list[str]:
        """One line per server that failed to start or to list its tools."""
        return [f"MCP server {c.name}: {c.error}" for c in self._connections if not c.specs and c.error]

    async def close(self) -> None:
        """Disconnect every server and end the stdio ones; safe to call again, bounded in time."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(connection.close() for connection in self._connections))

    async def __aenter__(self) -> McpHub:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class _StartError(Exception):
    """A reason not to start a server, worded for the user."""


async def _list_tools(session: Any) -> list[Any]:
    from mcp.types import PaginatedRequestParams

    tools: list[Any] = []
    cursor = None
    for _ in range(_MAX_PAGES):
        page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _expand(value: str, where: str) -> str:
    """`${NAME}` replaced by kimicode's environment variable, so secrets need not be in the file."""

    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise _StartError(f"{where} uses ${{{name}}}, which is not set in the environment")
        return os.environ[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", variable, value)


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real exception inside anyio's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
