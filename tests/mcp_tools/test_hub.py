"""MCP servers' tools through the hub, against a real MCP server run as a subprocess."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mcp_types as types
import pytest

from kimicode.approval import ApprovalPolicy
from kimicode.config import McpServerSettings
from kimicode.mcp_tools import McpHub
from kimicode.mcp_tools.tool import MAX_NAME, MAX_OUTPUT, render_result, tool_name
from kimicode.tools.base import ToolContext
from kimicode.workspace import Workspace
from tests.fakes.openai_server import Reply, ToolCall

ECHO_SERVER = str(Path(__file__).with_name("echo_server.py"))


def echo(**settings) -> McpServerSettings:
    return McpServerSettings(command=sys.executable, args=[ECHO_SERVER], **settings)


@pytest.fixture
def ctx(tmp_path):
    return ToolContext(Workspace(tmp_path))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_tools_are_listed_namespaced_and_callable(tmp_path, ctx):
    hub = await McpHub.start({"echo": echo()}, cwd=tmp_path)
    try:
        assert hub.errors == []
        tools = {tool.name: tool for tool in hub.tools}
        assert set(tools) == {"echo__echo", "echo__add", "echo__slow", "echo__fail", "echo__crash",
                              "echo__header", "echo__weird_name_with_spaces"}
        schema = tools["echo__add"].schema()["function"]
        assert schema["description"] == "[MCP server echo] Add two integers."
        assert schema["parameters"]["required"] == ["a", "b"]
        assert tools["echo__fail"].schema()["function"]["parameters"]["properties"] == {}
        assert tools["echo__add"].kind == "other"
        assert tools["echo__echo"].title({"text": "hi"}) == 'echo: echo(text="hi")'

        assert (await tools["echo__echo"]({"text": "hello"}, ctx)).output == "hello"
        added = await tools["echo__add"]({"a": 2, "b": 40}, ctx)
        assert (added.output, added.is_error) == ("42", False)
        assert (await tools["echo__weird_name_with_spaces"]({}, ctx)).output == "weird"

        failed = await tools["echo__fail"]({}, ctx)
        assert failed.is_error and "this tool always fails" in failed.output
        missing = await tools["echo__add"]({"a": 1}, ctx)
        assert missing.is_error and "missing required b" in missing.output
        rejected = await tools["echo__add"]({"a": 1, "b": "many"}, ctx)  # the server validates types
        assert rejected.is_error and "b" in rejected.output
        not_object = await tools["echo__echo"](["hello"], ctx)  # type: ignore[arg-type]
        assert not_object.is_error and "must be a JSON object" in not_object.output
    finally:
        await hub.close()


async def test_a_slow_call_times_out_and_the_server_still_works(tmp_path, ctx):
    hub = await McpHub.start({"echo": echo(timeout=0.5)}, cwd=tmp_path)
    try:
        tools = {tool.name: tool for tool in hub.tools}
        started = time.monotonic()
        slow = await tools["echo__slow"]({"seconds": 30}, ctx)
        assert slow.is_error and "slow timed out after 0.5 s" in slow.output
        assert time.monotonic() - started < 5
        assert (await tools["echo__echo"]({"text": "still here"}, ctx)).output == "still here"
    finally:
        await hub.close()


async def test_a_server_that_dies_mid_session_gives_error_results(tmp_path, ctx):
    hub = await McpHub.start({"echo": echo()}, cwd=tmp_path)
    try:
        tools = {tool.name: tool for tool in hub.tools}
        crashed = await asyncio.wait_for(tools["echo__crash"]({}, ctx), 10)
        assert crashed.is_error and "closed the connection" in crashed.output
        after = await asyncio.wait_for(tools["echo__echo"]({"text": "x"}, ctx), 10)
        assert after.is_error and "MCP server echo" in after.output
    finally:
        await asyncio.wait_for(hub.close(), 15)


async def test_failing_servers_are_reported_and_the_good_one_works(tmp_path, ctx):
    exits = McpServerSettings(
        command=sys.executable, args=["-c", "import sys; print('no config found', file=sys.stderr); sys.exit(3)"]
    )
    hangs = McpServerSettings(command=sys.executable, args=["-c", "import time; time.sleep(60)"], startup_timeout=1)
    servers = {
        "good": echo(),
        "missing": McpServerSettings(command="kimicode-no-such-mcp-server"),
        "exits": exits,
        "hangs": hangs,
        "nowhere": McpServerSettings(command=sys.executable, cwd="no/such/folder"),
        "secret": McpServerSettings(command=sys.executable, env={"TOKEN": "${KIMICODE_TEST_UNSET_VARIABLE}"}),
        "off": McpServerSettings(command="kimicode-no-such-mcp-server", enabled=False),
    }
    started = time.monotonic()
    hub = await McpHub.start(servers, cwd=tmp_path)
    try:
        assert time.monotonic() - started < 15
        assert sorted(hub.errors) == sorted([
            "MCP server missing: command not found: kimicode-no-such-mcp-server",
            "MCP server exits: the server exited during startup; stderr: no config found",
            "MCP server hangs: timed out after 1 s starting and listing its tools",
            f"MCP server nowhere: working folder {tmp_path}/no/such/folder does not exist",
            "MCP server secret: env.TOKEN uses ${KIMICODE_TEST_UNSET_VARIABLE}, which is not set in the environment",
        ])
        assert {tool.name.split("__")[0] for tool in hub.tools} == {"good"}
        tools = {tool.name: tool for tool in hub.tools}
        assert (await tools["good__echo"]({"text": "fine"}, ctx)).output == "fine"
    finally:
        await hub.close()


async def test_close_ends_the_server_process_from_another_task_and_is_idempotent(tmp_path, ctx):
    pid_file = tmp_path / "echo.pid"
    # Started, used and closed from three different tasks: the hub keeps each
    # connection in a task of its own, as the SDK's anyio context managers need.
    hub = await asyncio.create_task(McpHub.start({"echo": echo(env={"ECHO_PID_FILE": str(pid_file)})}))
    pid = int(pid_file.read_text())
    assert alive(pid)
    tools = {tool.name: tool for tool in hub.tools}
    assert (await asyncio.create_task(tools["echo__echo"]({"text": "x"}, ctx))).output == "x"

    started = time.monotonic()
    await asyncio.create_task(hub.close())
    assert time.monotonic() - started < 10
    assert not alive(pid)
    await hub.close()
    closed = await tools["echo__echo"]({"text": "x"}, ctx)
    assert closed.is_error and "not connected" in closed.output


async def test_no_servers_make_an_empty_hub():
    hub = await McpHub.start({})
    assert (hub.tools, hub.errors) == ([], [])
    await hub.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server():
    port = free_port()
    process = subprocess.Popen([sys.executable, ECHO_SERVER, "--http", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the HTTP echo server did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


async def test_a_streamable_http_server_with_headers(http_server, ctx, monkeypatch):
    monkeypatch.setenv("KIMICODE_TEST_TOKEN", "s3cret")
    settings = McpServerSettings(url=http_server, headers={"X-Token": "Bearer ${KIMICODE_TEST_TOKEN}"})
    hub = await McpHub.start({"web": settings})
    try:
        assert hub.errors == []
        tools = {tool.name: tool for tool in hub.tools}
        assert (await tools["web__add"]({"a": 1, "b": 2}, ctx)).output == "3"
        assert (await tools["web__header"]({"name": "X-Token"}, ctx)).output == "Bearer s3cret"
    finally:
        await asyncio.wait_for(hub.close(), 15)


async def test_an_unreachable_http_server_is_reported():
    hub = await McpHub.start({"web": McpServerSettings(url=f"http://127.0.0.1:{free_port()}/mcp")})
    [error] = hub.errors
    assert error.startswith("MCP server web: cannot reach http://127.0.0.1:")
    await hub.close()


def test_tool_names_are_sanitised_short_unique_and_stable():
    assert tool_name("github", "create_issue", set()) == "github__create_issue"
    assert tool_name("fs", "read.file v2", set()) == "fs__read_file_v2"
    long = tool_name("server", "x" * 100, set())
    assert len(long) == MAX_NAME and long == tool_name("server", "x" * 100, set())
    assert long != tool_name("server", "x" * 99, set())
    taken = {"fs__a_b"}
    second = tool_name("fs", "a.b", taken)
    assert second != "fs__a_b" and second.startswith("fs__a_b_") and len(second) <= MAX_NAME


def test_results_summarise_non_text_and_are_capped():
    image = types.ImageContent(data="A" * 400, mime_type="image/png")
    text = types.TextContent(text="a chart:")
    assert render_result(types.CallToolResult(content=[text, image])).output == "a chart:\n[image/png, 300 bytes]"
    structured = render_result(types.CallToolResult(content=[], structured_content={"rows": 2}))
    assert structured.output == '{"rows": 2}'
    assert render_result(types.CallToolResult(content=[])).output == "(no output)"
    error = render_result(types.CallToolResult(content=[types.TextContent(text="nope")], is_error=True))
    assert (error.output, error.is_error) == ("nope", True)
    resource = types.EmbeddedResource(resource=types.TextResourceContents(uri="file:///a.txt", text="body"))
    assert render_result(types.CallToolResult(content=[resource])).output == "[resource file:///a.txt]\nbody"
    big = render_result(types.CallToolResult(content=[types.TextContent(text="x" * (MAX_OUTPUT + 500))]))
    assert len(big.output) < MAX_OUTPUT + 100
    assert big.output.endswith(f"[output truncated: 500 of {MAX_OUTPUT + 500:,} characters cut]")


def test_the_approval_policy_treats_mcp_tools_by_name(tmp_path):
    asks = ApprovalPolicy("ask", tmp_path).check("echo__echo", "other", {"text": "x"})
    assert (asks.action, asks.rules) == ("ask", ("echo__echo",))
    assert ApprovalPolicy("ask", tmp_path, allow=["echo__echo"]).check("echo__echo", "other", {}).action == "allow"
    assert ApprovalPolicy("auto", tmp_path).check("echo__echo", "other", {}).action == "allow"
    assert ApprovalPolicy("yolo", tmp_path, deny=["echo__echo"]).check("echo__echo", "other", {}).action == "deny"
    assert ApprovalPolicy("plan", tmp_path).check("echo__echo", "other", {}).action == "deny"


async def test_the_agent_calls_an_mcp_tool(fake_openai, tmp_path):
    from kimicode.agent.setup import create_agent
    from kimicode.config import load_settings

    settings = load_settings(tmp_path, {"provider": "custom", "base_url": fake_openai.base_url, "model": "k2",
                                        "auto_test": False, "repo_map": False, "checkpoints": False})
    hub = await McpHub.start({"echo": echo()}, cwd=tmp_path)
    try:
        agent = create_agent(settings, tmp_path, default_mode="yolo", extra_tools=hub.tools)
        call = ToolCall("echo__echo", {"text": "hello from MCP"})
        fake_openai.script(Reply(tool_calls=[call]), Reply(text="done"))
        [event async for event in agent.run("echo something")]
        agent.session.close()
        await agent.backend.aclose()
    finally:
        await hub.close()
    offered = [tool["function"]["name"] for tool in fake_openai.requests[0]["tools"]]
    assert "read_file" in offered and "echo__echo" in offered
    messages = fake_openai.requests[1]["messages"]
    [asked] = [m for m in messages if m["role"] == "assistant"]
    [result] = [m for m in messages if m["role"] == "tool"]
    assert asked["tool_calls"][0]["function"]["name"] == "echo__echo"
    assert (result["tool_call_id"], result["content"]) == (asked["tool_calls"][0]["id"], "hello from MCP")
