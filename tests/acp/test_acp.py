"""`kimicode acp` as an editor runs it: a subprocess driven by the official ACP client
(`acp.spawn_agent_process`), the model behind it the fake OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import acp
import pytest
from acp.schema import AllowedOutcome, ClientCapabilities, DeniedOutcome, RequestPermissionResponse

from tests.fakes.openai_server import Reply, ToolCall


class EditorClient:
    """What an editor does: shows updates, answers permission requests as told."""

    def __init__(self, answer: str | None = "allow_once") -> None:
        self.answer = answer  # option id to pick; None: the user dismisses the prompt
        self.updates: list[Any] = []
        self.permission_requests: list[Any] = []
        self.asked = asyncio.Event()

    async def request_permission(self, session_id, tool_call, options, **kwargs):
        self.permission_requests.append((tool_call, options))
        self.asked.set()
        if self.answer is None:
            return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))
        return RequestPermissionResponse(outcome=AllowedOutcome(outcome="selected", option_id=self.answer))

    async def session_update(self, session_id, update, **kwargs):
        self.updates.append(update)

    async def write_text_file(self, *args, **kwargs):
        raise NotImplementedError

    async def read_text_file(self, *args, **kwargs):
        raise NotImplementedError

    async def ext_method(self, method, params):
        return {}

    async def ext_notification(self, method, params):
        return None

    def on_connect(self, conn):
        pass

    def of(self, kind: str) -> list[Any]:
        return [u for u in self.updates if getattr(u, "session_update", None) == kind]

    def text(self, kind: str = "agent_message_chunk") -> str:
        return "".join(u.content.text for u in self.of(kind))


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    (root / "app.py").write_text("VALUE = 1\n")
    (root / ".kimicode").mkdir()
    (root / ".kimicode" / "config.toml").write_text("auto_test = false\nrepo_map = false\n[retry]\nmax_attempts = 2\nbase_delay = 0.01\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def agent_env(server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIMICODE_", "MOONSHOT_", "OPENROUTER_"))}
    env.update(KIMICODE_PROVIDER="custom", KIMICODE_BASE_URL=server.base_url, KIMICODE_MODEL="kimi-k2-0905-preview")
    return env


async def start(client: EditorClient, server, project):
    """(connection, process) of a running `kimicode acp`, initialized."""
    spawned = acp.spawn_agent_process(client, sys.executable, "-m", "kimicode", "acp", env=agent_env(server), cwd=project)
    conn, process = await spawned.__aenter__()
    response = await conn.initialize(protocol_version=acp.PROTOCOL_VERSION, client_capabilities=ClientCapabilities())
    return spawned, conn, process, response


def read_then_edit():
    return [Reply(text="Looking.", reasoning="Read it first.", tool_calls=[ToolCall("read_file", {"path": "app.py"})]),
            Reply(tool_calls=[ToolCall("edit_file", {"path": "app.py", "old_string": "VALUE = 1", "new_string": "VALUE = 2"})])]


async def test_a_prompt_turn_streams_text_thoughts_tool_calls_and_a_diff(fake_openai, project):
    fake_openai.script(*read_then_edit(), Reply(text="VALUE is 2 now."))
    client = EditorClient("allow_once")
    spawned, conn, process, init = await start(client, fake_openai, project)
    try:
        caps = init.agent_capabilities
        assert caps.load_session and caps.prompt_capabilities.embedded_context and caps.mcp_capabilities.http
        session = await conn.new_session(cwd=str(project), mcp_servers=[])
        assert session.modes.current_mode_id == "ask" and "yolo" in [m.id for m in session.modes.available_modes]
        response = await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("bump VALUE")])
        assert response.stop_reason == "end_turn"
        assert client.text() == "Looking.VALUE is 2 now."
        assert client.text("agent_thought_chunk") == "Read it first."
        starts = client.of("tool_call")
        assert [(s.kind, s.title) for s in starts] == [("read", "Read app.py"), ("edit", "Edit app.py")]
        assert starts[1].locations[0].path == str(project / "app.py")
        [(asked, options)] = client.permission_requests
        assert asked.kind == "edit" and [o.kind for o in options] == ["allow_once", "allow_always", "reject_once"]
        done = [u for u in client.of("tool_call_update") if u.status == "completed"]
        diff = done[-1].content[0]
        assert (diff.type, diff.old_text, diff.new_text) == ("diff", "VALUE = 1\n", "VALUE = 2\n")
        assert (project / "app.py").read_text() == "VALUE = 2\n"
    finally:
        await spawned.__aexit__(None, None, None)


async def test_a_rejected_or_dismissed_permission_runs_nothing(fake_openai, project):
    for answer in ("reject", None):
        fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": "touch made"})]), Reply(text="ok, not running it"))
        client = EditorClient(answer)
        spawned, conn, process, _ = await start(client, fake_openai, project)
        try:
            session = await conn.new_session(cwd=str(project), mcp_servers=[])
            response = await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("make a file")])
            assert response.stop_reason == "end_turn"
            assert [u.status for u in client.of("tool_call_update")] == ["failed"]
        finally:
            await spawned.__aexit__(None, None, None)
        assert not (project / "made").exists()
        tool_result = [m for m in fake_openai.requests[-1]["messages"] if m["role"] == "tool"][0]["content"]
        assert "denied" in tool_result


async def test_cancel_stops_a_turn_promptly(fake_openai, project):
    fake_openai.script(Reply(text="Working on it", hang=True), Reply(text="after cancel"))
    client = EditorClient()
    spawned, conn, process, _ = await start(client, fake_openai, project)
    try:
        session = await conn.new_session(cwd=str(project), mcp_servers=[])
        turn = asyncio.create_task(conn.prompt(session_id=session.session_id, prompt=[acp.text_block("go")]))
        for _ in range(200):
            if client.text():
                break
            await asyncio.sleep(0.02)
        started = time.monotonic()
        await conn.cancel(session_id=session.session_id)
        response = await asyncio.wait_for(turn, 5)
        assert response.stop_reason == "cancelled" and time.monotonic() - started < 2
        again = await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("again")])
        assert again.stop_reason == "end_turn" and client.text().endswith("after cancel")
    finally:
        await spawned.__aexit__(None, None, None)


async def test_load_replays_a_previous_session_and_modes_switch(fake_openai, project):
    fake_openai.script(Reply(tool_calls=[ToolCall("read_file", {"path": "app.py"})]), Reply(text="It is one."),
                       Reply(text="Still one."))
    client = EditorClient()
    spawned, conn, process, _ = await start(client, fake_openai, project)
    try:
        session = await conn.new_session(cwd=str(project), mcp_servers=[])
        await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("what is VALUE?")])
        listed = await conn.list_sessions(cwd=str(project))
        assert session.session_id in [s.session_id for s in listed.sessions]
    finally:
        await spawned.__aexit__(None, None, None)

    client = EditorClient()
    spawned, conn, process, _ = await start(client, fake_openai, project)
    try:
        await conn.load_session(cwd=str(project), session_id=session.session_id, mcp_servers=[])
        assert client.text("user_message_chunk") == "what is VALUE?"
        assert client.text() == "It is one."
        assert [s.title for s in client.of("tool_call")] == ["read_file"]
        await conn.set_session_mode(session_id=session.session_id, mode_id="plan")
        assert client.of("current_mode_update")[-1].current_mode_id == "plan"
        with pytest.raises(acp.RequestError):
            await conn.set_session_mode(session_id=session.session_id, mode_id="reckless")
        await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("and now?")])
        assert "Mode: plan" in fake_openai.requests[-1]["messages"][0]["content"]  # the mode reached the prompt
        users = [m["content"] for m in fake_openai.requests[-1]["messages"] if m["role"] == "user"]
        assert users == ["what is VALUE?", "and now?"]
    finally:
        await spawned.__aexit__(None, None, None)


async def test_two_sessions_at_once_and_bad_requests(fake_openai, project, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    fake_openai.script(Reply(text="first", delay=0.02, chunk_size=1), Reply(text="second", delay=0.02, chunk_size=1))
    client = EditorClient()
    spawned, conn, process, _ = await start(client, fake_openai, project)
    try:
        one = await conn.new_session(cwd=str(project), mcp_servers=[])
        two = await conn.new_session(cwd=str(other), mcp_servers=[])
        results = await asyncio.gather(
            conn.prompt(session_id=one.session_id, prompt=[acp.text_block("a")]),
            conn.prompt(session_id=two.session_id, prompt=[acp.text_block("b")]),
        )
        assert [r.stop_reason for r in results] == ["end_turn", "end_turn"]
        assert sorted(client.text()) == sorted("firstsecond")
        for bad in (lambda: conn.new_session(cwd="relative/path", mcp_servers=[]),
                    lambda: conn.prompt(session_id="no-such-session", prompt=[acp.text_block("x")]),
                    lambda: conn.load_session(cwd=str(project), session_id="zzz-missing", mcp_servers=[])):
            with pytest.raises(acp.RequestError):
                await bad()
        assert process.returncode is None  # still serving
    finally:
        await spawned.__aexit__(None, None, None)


async def test_embedded_resources_reach_the_model(fake_openai, project):
    from acp.schema import EmbeddedResourceContentBlock, TextResourceContents

    fake_openai.script(Reply(text="seen"))
    client = EditorClient()
    spawned, conn, process, _ = await start(client, fake_openai, project)
    try:
        session = await conn.new_session(cwd=str(project), mcp_servers=[])
        unsaved = TextResourceContents(uri=f"file://{project}/app.py", text="VALUE = 99  # unsaved buffer")
        await conn.prompt(session_id=session.session_id, prompt=[
            acp.text_block("explain this"), EmbeddedResourceContentBlock(type="resource", resource=unsaved)])
    finally:
        await spawned.__aexit__(None, None, None)
    sent = fake_openai.requests[-1]["messages"][-1]["content"]
    assert sent.startswith("explain this") and '<file path="app.py">\nVALUE = 99  # unsaved buffer\n</file>' in sent


def test_stdout_carries_only_protocol_frames_and_bad_input_gets_errors(fake_openai, project):
    lines = [
        "not json",
        "[1, 2]",
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}}),
        json.dumps({"jsonrpc": "2.0", "id": 2, "method": "no/such/method", "params": {}}),
        json.dumps({"jsonrpc": "2.0", "id": 3, "method": "session/new", "params": {"cwd": str(project), "mcpServers": []}}),
    ]
    proc = subprocess.Popen([sys.executable, "-m", "kimicode", "acp", "-v"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=agent_env(fake_openai),
                            cwd=project)
    proc.stdin.write("\n".join(lines) + "\n")
    proc.stdin.flush()
    frames = []
    while len(frames) < 5:  # every stdout line is a JSON-RPC frame
        frames.append(json.loads(proc.stdout.readline()))
    proc.stdin.close()  # the editor goes away: the server ends cleanly
    assert proc.wait(timeout=30) == 0
    by_id = {frame.get("id"): frame for frame in frames}
    assert [f["error"]["code"] for f in frames if f.get("id") is None] == [-32700, -32600]
    assert by_id[1]["result"]["agentInfo"]["name"] == "kimicode"
    assert by_id[2]["error"]["code"] == -32601
    assert by_id[3]["result"]["sessionId"]
    assert proc.stdout.read() == ""
    assert "DEBUG" in proc.stderr.read()  # -v logs go to stderr, never stdout


def test_outside_a_pipe_it_explains_itself(tmp_path):
    out = tmp_path / "out.txt"
    with out.open("w") as f:
        proc = subprocess.run([sys.executable, "-m", "kimicode", "acp"], stdout=f, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, timeout=30)
    assert proc.returncode == 2 and "over pipes" in proc.stderr and out.read_text() == ""


def test_the_quick_initialize_answer_matches_the_sdk_schema():
    from acp.schema import InitializeResponse

    from kimicode.acp.handshake import PROTOCOL_VERSION, initialize_result

    assert PROTOCOL_VERSION == acp.PROTOCOL_VERSION
    parsed = InitializeResponse.model_validate(initialize_result())
    assert parsed.model_dump(by_alias=True, exclude_unset=True) == initialize_result()


class BufferEditor(EditorClient):
    """An editor with an unsaved buffer: reads and writes go through it, not the disk."""

    def __init__(self, buffers: dict[str, str]) -> None:
        super().__init__("allow_once")
        self.buffers = buffers
        self.writes: list[tuple[str, str]] = []

    async def read_text_file(self, session_id, path, line=None, limit=None, **kwargs):
        from acp.schema import ReadTextFileResponse

        if path not in self.buffers:
            raise acp.RequestError.resource_not_found(path)
        return ReadTextFileResponse(content=self.buffers[path])

    async def write_text_file(self, session_id, path, content, **kwargs):
        from acp.schema import WriteTextFileResponse

        self.writes.append((path, content))
        self.buffers[path] = content
        return WriteTextFileResponse()


async def test_reads_and_writes_go_through_an_editor_that_offers_fs(fake_openai, project):
    from acp.schema import FileSystemCapabilities

    app = str(project / "app.py")
    fake_openai.script(*read_then_edit(), Reply(text="done"))
    client = BufferEditor({app: "VALUE = 1  # unsaved edit in the editor\n"})
    spawned = acp.spawn_agent_process(client, sys.executable, "-m", "kimicode", "acp", env=agent_env(fake_openai), cwd=project)
    conn, process = await spawned.__aenter__()
    try:
        await conn.initialize(protocol_version=acp.PROTOCOL_VERSION, client_capabilities=ClientCapabilities(
            fs=FileSystemCapabilities(read_text_file=True, write_text_file=True)))
        session = await conn.new_session(cwd=str(project), mcp_servers=[])
        await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("bump VALUE")])
    finally:
        await spawned.__aexit__(None, None, None)
    read_result = [m for m in fake_openai.requests[1]["messages"] if m["role"] == "tool"][0]["content"]
    assert "unsaved edit in the editor" in read_result  # the model saw the buffer, not the disk
    assert client.writes == [(app, "VALUE = 2  # unsaved edit in the editor\n")]
    diff = [u for u in client.of("tool_call_update") if u.status == "completed"][-1].content[0]
    assert (diff.old_text, diff.new_text) == ("VALUE = 1  # unsaved edit in the editor\n",
                                              "VALUE = 2  # unsaved edit in the editor\n")
    assert (project / "app.py").read_text() == "VALUE = 1\n"  # the editor decides when to save


class TerminalEditor(EditorClient):
    """An editor with terminals: it runs the commands itself (here: real bash processes)."""

    def __init__(self) -> None:
        super().__init__("allow_once")
        self.terminals: dict[str, Any] = {}
        self.calls: list[str] = []

    async def create_terminal(self, session_id, command, args=None, env=None, cwd=None, output_byte_limit=None, **kw):
        from acp.schema import CreateTerminalResponse

        self.calls.append(f"create {command} {' '.join(args or [])}")
        extra = {e.name: e.value for e in env or []}
        process = await asyncio.create_subprocess_exec(command, *(args or []), cwd=cwd, env={**os.environ, **extra},
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                       start_new_session=True)
        terminal_id = f"term-{len(self.terminals)}"
        self.terminals[terminal_id] = (process, asyncio.create_task(process.stdout.read()))
        return CreateTerminalResponse(terminal_id=terminal_id)

    async def wait_for_terminal_exit(self, session_id, terminal_id, **kw):
        from acp.schema import WaitForTerminalExitResponse

        process, _ = self.terminals[terminal_id]
        return WaitForTerminalExitResponse(exit_code=await process.wait())

    async def terminal_output(self, session_id, terminal_id, **kw):
        from acp.schema import TerminalExitStatus, TerminalOutputResponse

        process, reading = self.terminals[terminal_id]
        done = reading.done()
        output = (await asyncio.wait_for(reading, 5)).decode() if done or process.returncode is not None else ""
        status = TerminalExitStatus(exit_code=process.returncode) if process.returncode is not None else None
        return TerminalOutputResponse(output=output, truncated=False, exit_status=status)

    async def kill_terminal(self, session_id, terminal_id, **kw):
        self.calls.append(f"kill {terminal_id}")
        process, _ = self.terminals[terminal_id]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()

    async def release_terminal(self, session_id, terminal_id, **kw):
        self.calls.append(f"release {terminal_id}")


async def test_commands_run_in_the_editors_terminal_when_it_offers_one(fake_openai, project):
    fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": "echo from-the-editor; exit 3"})]),
                       Reply(tool_calls=[ToolCall("shell", {"command": "sleep 30", "timeout": 1})]),
                       Reply(text="done"))
    client = TerminalEditor()
    spawned = acp.spawn_agent_process(client, sys.executable, "-m", "kimicode", "acp", env=agent_env(fake_openai), cwd=project)
    conn, process = await spawned.__aenter__()
    try:
        await conn.initialize(protocol_version=acp.PROTOCOL_VERSION,
                              client_capabilities=ClientCapabilities(terminal=True))
        session = await conn.new_session(cwd=str(project), mcp_servers=[])
        await conn.set_session_mode(session_id=session.session_id, mode_id="yolo")
        await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("run it")])
    finally:
        await spawned.__aexit__(None, None, None)
    assert client.calls == ["create bash -c echo from-the-editor; exit 3", "release term-0",
                            "create bash -c sleep 30", "kill term-1", "release term-1"]
    results = [m["content"] for m in fake_openai.requests[-1]["messages"] if m["role"] == "tool"]
    assert "from-the-editor" in results[0] and "[exit code 3]" in results[0]
    assert "timed out after 1 s" in results[1]
    refs = [c.terminal_id for u in client.of("tool_call_update") for c in (u.content or []) if c.type == "terminal"]
    assert list(dict.fromkeys(refs)) == ["term-0", "term-1"]  # the editor shows its terminal in the call
    finals = [u for u in client.of("tool_call_update") if u.status in ("completed", "failed")]
    assert [f.content[0].type for f in finals] == ["terminal", "terminal"]  # and keeps showing it



async def test_cancel_during_a_permission_prompt_fails_the_call_and_runs_nothing(fake_openai, project):
    fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": "touch made"})]))
    client = EditorClient()

    async def never_answers(session_id, tool_call, options, **kwargs):
        client.asked.set()
        await asyncio.sleep(3600)

    client.request_permission = never_answers
    spawned, conn, process, _ = await start(client, fake_openai, project)
    try:
        session = await conn.new_session(cwd=str(project), mcp_servers=[])
        turn = asyncio.create_task(conn.prompt(session_id=session.session_id, prompt=[acp.text_block("go")]))
        await asyncio.wait_for(client.asked.wait(), 20)
        await conn.cancel(session_id=session.session_id)
        assert (await asyncio.wait_for(turn, 5)).stop_reason == "cancelled"
        assert [u.status for u in client.of("tool_call_update")] == ["failed"]  # not left "in progress"
    finally:
        await spawned.__aexit__(None, None, None)
    assert not (project / "made").exists()


async def test_reopening_a_session_in_the_same_process_replays_it_and_prefixes_are_refused(fake_openai, project):
    fake_openai.script(Reply(text="first answer"))
    client = EditorClient()
    spawned, conn, process, _ = await start(client, fake_openai, project)
    try:
        session = await conn.new_session(cwd=str(project), mcp_servers=[])
        await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("hello")])
        client.updates.clear()
        await conn.load_session(cwd=str(project), session_id=session.session_id, mcp_servers=[])
        assert client.text("user_message_chunk") == "hello" and client.text() == "first answer"
        with pytest.raises(acp.RequestError):
            await conn.load_session(cwd=str(project), session_id=session.session_id[:12], mcp_servers=[])
    finally:
        await spawned.__aexit__(None, None, None)


def test_sigterm_stops_running_commands(fake_openai, project):
    fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": "echo $$ > pid; sleep 60"})]))
    proc = subprocess.Popen([sys.executable, "-m", "kimicode", "acp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=agent_env(fake_openai), cwd=project)
    frames = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}},
        {"jsonrpc": "2.0", "id": 2, "method": "session/new", "params": {"cwd": str(project), "mcpServers": []}},
    ]
    for frame in frames:
        proc.stdin.write(json.dumps(frame) + "\n")
    proc.stdin.flush()
    while (response := json.loads(proc.stdout.readline())).get("id") != 2:
        pass
    sid = response["result"]["sessionId"]
    for frame in ({"jsonrpc": "2.0", "id": 3, "method": "session/set_mode", "params": {"sessionId": sid, "modeId": "yolo"}},
                  {"jsonrpc": "2.0", "id": 4, "method": "session/prompt",
                   "params": {"sessionId": sid, "prompt": [{"type": "text", "text": "go"}]}}):
        proc.stdin.write(json.dumps(frame) + "\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not (project / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    command_pid = int((project / "pid").read_text())
    proc.terminate()
    assert proc.wait(timeout=15) is not None
    from tests.processes import gone

    assert gone(command_pid)


def test_bad_initialize_params_and_oversized_frames_get_errors_and_the_server_goes_on(fake_openai, project):
    from kimicode.acp.stdio import STDIO_LIMIT

    proc = subprocess.Popen([sys.executable, "-m", "kimicode", "acp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=agent_env(fake_openai), cwd=project)
    proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                 "params": {"protocolVersion": 1, "clientCapabilities": {"fs": "yes"}}}).encode() + b"\n")
    proc.stdin.write(b"x" * (STDIO_LIMIT + 10) + b"\n")
    proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "initialize",
                                 "params": {"protocolVersion": 1}}).encode() + b"\n")
    proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "session/new",
                                 "params": {"cwd": str(project), "mcpServers": []}}).encode() + b"\n")
    proc.stdin.flush()
    frames = [json.loads(proc.stdout.readline()) for _ in range(4)]
    proc.stdin.close()
    proc.wait(timeout=30)
    by_id = {f.get("id"): f for f in frames}
    assert by_id[1]["error"]["code"] == -32602
    assert by_id[None]["error"]["code"] == -32600  # the oversized frame
    assert by_id[2]["result"]["agentInfo"]["name"] == "kimicode"
    assert by_id[3]["result"]["sessionId"]


def test_editor_mcp_values_are_never_filled_from_kimicodes_environment():
    from acp.schema import HttpHeader, HttpMcpServer

    from kimicode.acp.mcp import client_servers

    servers, problems = client_servers([HttpMcpServer(type="http", name="evil", url="https://x.example/mcp",
                                                      headers=[HttpHeader(name="Authorization",
                                                                          value="Bearer ${MOONSHOT_API_KEY}")])])
    assert problems == [] and servers["evil"].expand_env is False
    assert servers["evil"].headers == {"Authorization": "Bearer ${MOONSHOT_API_KEY}"}
