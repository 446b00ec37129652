"""MCP servers reach the model through every front end: headless from the user config, and
ACP from the servers an editor hands over; a broken server is reported, never fatal."""

from __future__ import annotations

import json
import subprocess
import sys

import acp
from acp.schema import EnvVariable, McpServerStdio, SseMcpServer

from tests.acp.test_acp import EditorClient, agent_env, project, start  # noqa: F401  (fixture)
from tests.fakes.openai_server import Reply, ToolCall
from tests.mcp_tools.test_hub import ECHO_SERVER


def tool_results(request: dict) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def test_headless_uses_servers_from_the_user_config_and_reports_broken_ones(fake_openai, project, isolated_home):
    config = isolated_home / "config" / "kimicode" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f'[mcp_servers.echo]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(ECHO_SERVER)}]\n'
        '[mcp_servers.broken]\ncommand = "no-such-mcp-server-command"\n'
    )
    fake_openai.script(Reply(tool_calls=[ToolCall("echo__echo", {"text": "hello over MCP"})]), Reply(text="echoed"))
    proc = subprocess.run([sys.executable, "-m", "kimicode", "--task", "echo it", "--yolo"], cwd=project,
                          env=agent_env(fake_openai) | {"HOME": str(isolated_home),
                                                       "XDG_CONFIG_HOME": str(isolated_home / "config"),
                                                       "XDG_DATA_HOME": str(isolated_home / "data")},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "echoed\n"
    assert "MCP server broken" in proc.stderr
    tools = [t["function"]["name"] for t in fake_openai.requests[0]["tools"]]
    assert "echo__echo" in tools and not any(name.startswith("broken__") for name in tools)
    assert "hello over MCP" in tool_results(fake_openai.requests[-1])[0]


async def test_acp_sessions_use_the_servers_the_editor_hands_over(fake_openai, project):
    fake_openai.script(Reply(tool_calls=[ToolCall("editor_echo__add", {"a": 2, "b": 40})]), Reply(text="42"))
    client = EditorClient("allow_once")
    spawned, conn, process, _ = await start(client, fake_openai, project)
    try:
        servers = [McpServerStdio(name="editor echo", command=sys.executable, args=[ECHO_SERVER],
                                  env=[EnvVariable(name="UNUSED", value="1")]),
                   SseMcpServer(type="sse", name="old", url="http://127.0.0.1:9/sse", headers=[])]
        session = await conn.new_session(cwd=str(project), mcp_servers=servers)
        response = await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("add")])
        assert response.stop_reason == "end_turn"
        [(asked, _)] = client.permission_requests  # MCP tools go through the same approvals
        assert asked.title == "editor_echo: add(a=2, b=40)"
        assert "MCP server old: sse transport is not supported" in client.text()
    finally:
        await spawned.__aexit__(None, None, None)
    assert tool_results(fake_openai.requests[-1]) == ["42"]
