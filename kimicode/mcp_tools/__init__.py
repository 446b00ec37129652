"""Tools of MCP (Model Context Protocol) servers, as kimicode tools.

    hub = await McpHub.start(settings.mcp_servers, cwd=workspace_root)
    for line in hub.errors: ...          # servers that failed; the session goes on
    agent = create_agent(settings, root, default_mode=..., extra_tools=hub.tools)
    ...
    await hub.close()                    # from any task, any number of times
"""

from kimicode.mcp_tools.hub import McpHub
from kimicode.mcp_tools.tool import McpTool

__all__ = ["McpHub", "McpTool"]
