"""MCP servers an editor hands over in `session/new` / `session/load`, as kimicode settings."""

from __future__ import annotations

import re
from typing import Any

from acp.schema import HttpMcpServer, McpServerStdio

from kimicode.config import McpServerSettings


def client_servers(servers: list[Any] | None) -> tuple[dict[str, McpServerSettings], list[str]]:
    """(settings by name, problems): stdio and HTTP servers are used; others are reported."""
    found: dict[str, McpServerSettings] = {}
    problems: list[str] = []
    for server in servers or []:
        name = re.sub(r"[^A-Za-z0-9_-]", "_", getattr(server, "name", "") or "server")
        if isinstance(server, McpServerStdio):
            # expand_env off: an editor's value "${MOONSHOT_API_KEY}" must stay literal text.
            found[name] = McpServerSettings(command=server.command, args=list(server.args),
                                            env={v.name: v.value for v in server.env}, expand_env=False)
        elif isinstance(server, HttpMcpServer):
            found[name] = McpServerSettings(url=server.url, headers={h.name: h.value for h in server.headers},
                                            expand_env=False)
        else:
            problems.append(f"MCP server {name}: {getattr(server, 'type', 'this')} transport is not supported "
                            "(stdio and streamable HTTP are)")
    return found, problems
