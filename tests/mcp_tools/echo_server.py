"""A small MCP server for the tests, written with the SDK's MCPServer.

    python echo_server.py            serves on stdio
    python echo_server.py --http N   serves streamable HTTP on 127.0.0.1:N at /mcp

With ECHO_PID_FILE set it writes its pid there first, so a test can check that
closing the hub really ended the process.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("echo", log_level="ERROR")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then say so."""
    await asyncio.sleep(seconds)
    return f"slept {seconds} s"


@server.tool()
def fail() -> str:
    """Always fails (ToolError: the message reaches the client)."""
    raise ToolError("this tool always fails")


@server.tool()
def crash() -> str:
    """Ends the server process without answering."""
    os._exit(1)


@server.tool()
def header(name: str, ctx: Context) -> str:
    """The value of an HTTP request header (empty on stdio)."""
    return (ctx.headers or {}).get(name.lower(), "")


@server.tool(name="weird.name with spaces")
def weird() -> str:
    """A tool whose name needs sanitising."""
    return "weird"


if __name__ == "__main__":
    if pid_file := os.environ.get("ECHO_PID_FILE"):
        with open(pid_file, "w") as f:
            f.write(str(os.getpid()))
    if sys.argv[1:2] == ["--http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
