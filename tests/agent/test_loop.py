"""The agent loop end to end: real backend, real tools, real files, fake model server."""

import asyncio
import json
import time
from pathlib import Path

import pytest

from kimicode.agent.loop import Agent, Limits
from kimicode.approval import ApprovalPolicy, RuleStore
from kimicode.backends.base import ModelInfo
from kimicode.backends.openai_compat import OpenAICompatBackend, RetryPolicy
from kimicode.events import (
    Approval,
    ApprovalRequested,
    Decision,
    ErrorEvent,
    PlanUpdated,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolOutput,
    TurnFinished,
    TurnStarted,
    UsageUpdated,
)
from kimicode.tools.base import ToolContext, ToolRegistry
from kimicode.tools.plan import UpdatePlan
from kimicode.tools.registry import builtin_tools
from kimicode.workspace import Workspace
from tests.processes import gone
from tests.fakes.openai_server import Fault, Reply, ToolCall

INFO = ModelInfo("kimi-k2-test", input_price=1.0, output_price=2.0)


def make_agent(server, root, mode="auto", limits=Limits(), store=None):
    backend = OpenAICompatBackend(base_url=server.base_url, api_key="k", info=INFO,
                                  retry=RetryPolicy(3, 0.01, 0.05), request_timeout=5)
    policy = ApprovalPolicy(mode, root, store=store)
    ctx = ToolContext(Workspace(root), shell_timeout=10)
    return Agent(backend, ToolRegistry([*builtin_tools(), UpdatePlan()]), policy, ctx, "system prompt", limits)


async def run(agent, prompt="do it", answer=None):
    """All events of one turn; `answer(event)` resolves approval requests."""
    events = []
    async for event in agent.run(prompt):
        events.append(event)
        if isinstance(event, ApprovalRequested):
            event.reply.set_result(answer(event))
    return events


def finished(events):
    assert isinstance(events[-1], TurnFinished)
    return events[-1]


def tool_messages(body):
    return [m for m in body["messages"] if m["role"] == "tool"]


def assert_history_valid(messages):
    """Every tool call has exactly one result, right after its assistant message."""
    pending = []
    for m in messages:
        if m["role"] == "tool":
            assert m["tool_call_id"] in pending
            pending.remove(m["tool_call_id"])
        else:
            assert not pending, f"tool calls without results: {pending}"
            pending = [c["id"] for c in m.get("tool_calls") or ()]
    assert not pending


async def test_read_edit_answer_turn(fake_openai, tmp_path):
    (tmp_path / "app.py").write_text("def greet():\n    return 'hi'\n")
    read = ToolCall("read_file", {"path": "app.py"})
    edit = ToolCall("edit_file", {"path": "app.py", "old_string": "'hi'", "new_string": "'hello'"})
    fake_openai.script(
        Reply(text="Reading.", tool_calls=[read], usage=(500, 20, 0)),
        Reply(tool_calls=[edit], usage=(700, 30, 500)),
        Reply(text="Changed the greeting.", usage=(900, 10, 700)),
    )
    agent = make_agent(fake_openai, tmp_path)
    events = await run(agent)

    assert (tmp_path / "app.py").read_text() == "def greet():\n    return 'hello'\n"
    assert isinstance(events[0], TurnStarted)
    assert finished(events).stop_reason == "end_turn"
    assert finished(events).result == "Changed the greeting."
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    assert [(e.tool, e.kind) for e in started] == [("read_file", "read"), ("edit_file", "edit")]
    done = [e for e in events if isinstance(e, ToolCallFinished)]
    assert not any(e.is_error for e in done)
    assert "+    return 'hello'" in done[1].display["diff"]
    # The model saw each result under the id of its call.
    second = fake_openai.requests[1]
    assert tool_messages(second)[0]["tool_call_id"] == "functions.read_file:0"
    assert "return 'hi'" in tool_messages(second)[0]["content"]
    # Usage and cost add up over the three calls.
    last_usage = [e for e in events if isinstance(e, UsageUpdated)][-1]
    assert (last_usage.prompt_tokens, last_usage.completion_tokens, last_usage.cached_tokens) == (2100, 60, 1200)
    assert agent.cost_usd == pytest.approx((2100 - 1200) * 1e-6 + 60 * 2e-6)
    assert agent.steps == 3
    assert_history_valid(agent.messages)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (ToolCall("launch_rockets", {}), "unknown tool 'launch_rockets'"),
        (ToolCall("read_file", raw_arguments='{"path": "app.py"'), "not usable (invalid JSON"),
        (ToolCall("read_file", {"file": "app.py"}), "invalid arguments for read_file"),
        (ToolCall("read_file", {"path": "../outside.txt"}), "outside the workspace"),
    ],
)
async def test_a_bad_call_becomes_an_error_the_model_can_fix(fake_openai, tmp_path, call, expected):
    (tmp_path / "app.py").write_text("x = 1\n")
    fake_openai.script(
        Reply(tool_calls=[call]),
        Reply(tool_calls=[ToolCall("read_file", {"path": "app.py"})]),
        Reply(text="x is 1"),
    )
    agent = make_agent(fake_openai, tmp_path)
    events = await run(agent)
    assert finished(events).result == "x is 1"
    first_result = tool_messages(fake_openai.requests[1])[0]["content"]
    assert expected in first_result
    assert "x = 1" in tool_messages(fake_openai.requests[2])[1]["content"]
    assert_history_valid(agent.messages)


async def test_ids_are_unique_even_when_the_provider_repeats_them(fake_openai, tmp_path):
    (tmp_path / "a").write_text("a")
    same = [ToolCall("read_file", {"path": "a"}, id="dup"), ToolCall("read_file", {"path": "a"}, id="dup")]
    fake_openai.script(Reply(tool_calls=same), Reply(tool_calls=[ToolCall("read_file", {"path": "a"}, id="dup")]),
                       Reply(text="ok"))
    agent = make_agent(fake_openai, tmp_path)
    await run(agent)
    ids = [c["id"] for m in agent.messages for c in m.get("tool_calls") or ()]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert_history_valid(agent.messages)


async def test_denied_edit_is_not_written_and_the_note_reaches_the_model(fake_openai, tmp_path):
    fake_openai.script(Reply(tool_calls=[ToolCall("write_file", {"path": "new.txt", "content": "x"})]),
                       Reply(text="understood"))
    agent = make_agent(fake_openai, tmp_path, mode="ask")
    events = await run(agent, answer=lambda e: Approval(Decision.DENY, "use the existing file"))
    asked = [e for e in events if isinstance(e, ApprovalRequested)]
    assert [(a.tool, a.kind, a.rules) for a in asked] == [("write_file", "edit", ("write_file",))]
    assert not (tmp_path / "new.txt").exists()
    result = tool_messages(fake_openai.requests[1])[0]["content"]
    assert "denied" in result and "use the existing file" in result


async def test_allow_always_persists_a_prefix_rule(fake_openai, tmp_path):
    store = RuleStore(tmp_path / ".kimicode" / "permissions.json")
    first = ToolCall("shell", {"command": "touch a.txt && touch b.txt"})
    fake_openai.script(Reply(tool_calls=[first]), Reply(tool_calls=[ToolCall("shell", {"command": "touch c.txt"})]),
                       Reply(text="done"))
    agent = make_agent(fake_openai, tmp_path, mode="ask", store=store)
    events = await run(agent, answer=lambda e: Approval(Decision.ALLOW_ALWAYS))
    assert len([e for e in events if isinstance(e, ApprovalRequested)]) == 1  # the second touch was not asked
    assert json.loads((tmp_path / ".kimicode" / "permissions.json").read_text()) == {"allow": ["shell:touch"]}
    assert all((tmp_path / name).exists() for name in ("a.txt", "b.txt", "c.txt"))
    # A fresh policy reading the same store allows it too, but not a smuggled second command.
    fresh = ApprovalPolicy("ask", tmp_path, store=store)
    assert fresh.check("shell", "execute", {"command": "touch d"}).action == "allow"
    assert fresh.check("shell", "execute", {"command": "touch d; python3 x.py"}).action == "ask"


async def test_forbidden_commands_are_refused_even_in_yolo(fake_openai, tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": f"rm -rf {tmp_path}"})]), Reply(text="ok"))
    agent = make_agent(fake_openai, tmp_path, mode="yolo")
    await run(agent)
    assert victim.read_text() == "precious"
    assert "refused" in tool_messages(fake_openai.requests[1])[0]["content"]


async def test_plan_and_shell_output_stream_as_events(fake_openai, tmp_path):
    plan = ToolCall("update_plan", {"items": [{"step": "look", "status": "done"}, {"step": "fix", "status": "in_progress"}]})
    fake_openai.script(Reply(tool_calls=[plan, ToolCall("shell", {"command": "echo streamed-line"})]), Reply(text="ok"))
    events = await run(make_agent(fake_openai, tmp_path))
    plans = [e for e in events if isinstance(e, PlanUpdated)]
    assert [(i.step, i.status) for i in plans[0].items] == [("look", "done"), ("fix", "in_progress")]
    assert "streamed-line" in "".join(e.text for e in events if isinstance(e, ToolOutput))


async def test_max_steps_stops_with_a_valid_history(fake_openai, tmp_path):
    fake_openai.responder = lambda body: Reply(tool_calls=[ToolCall("list_dir", {"path": "."})])
    agent = make_agent(fake_openai, tmp_path, limits=Limits(max_steps=3))
    events = await run(agent)
    assert finished(events).stop_reason == "max_steps"
    assert len(fake_openai.requests) == 3
    assert_history_valid(agent.messages)


async def test_max_cost_stops_before_the_next_call(fake_openai, tmp_path):
    # Each call costs 1e6 * $1/M = $1 of input.
    fake_openai.responder = lambda body: Reply(tool_calls=[ToolCall("list_dir", {})], usage=(1_000_000, 0, 0))
    agent = make_agent(fake_openai, tmp_path, limits=Limits(max_cost=2.5))
    events = await run(agent)
    assert finished(events).stop_reason == "max_cost"
    assert len(fake_openai.requests) == 3 and agent.cost_usd == pytest.approx(3.0)


async def test_timeout_stops_a_slow_turn(fake_openai, tmp_path):
    fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": "sleep 20"})]))
    agent = make_agent(fake_openai, tmp_path, limits=Limits(timeout=0.5))
    started = time.monotonic()
    events = await run(agent)
    assert finished(events).stop_reason == "timeout"
    assert time.monotonic() - started < 5
    assert_history_valid(agent.messages)


async def test_cancel_mid_command_kills_children_and_the_next_turn_works(fake_openai, tmp_path):
    pid_file = tmp_path / "child.pid"
    command = f"sleep 30 & echo $! > {pid_file.name}; wait"
    fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": command})]), Reply(text="fresh start"))
    agent = make_agent(fake_openai, tmp_path)
    events = []
    async for event in agent.run("start"):
        events.append(event)
        if isinstance(event, ToolCallStarted):
            for _ in range(100):
                if pid_file.exists() and pid_file.read_text().strip():
                    break
                await asyncio.sleep(0.02)
            agent.cancel()
    assert finished(events).stop_reason == "cancelled"
    child = int(pid_file.read_text())
    assert gone(child)
    assert_history_valid(agent.messages)
    events = await run(agent, "again")
    assert finished(events).result == "fresh start"
    assert "cancelled" in tool_messages(fake_openai.requests[1])[0]["content"]


async def test_partial_output_of_a_failed_attempt_is_dropped(fake_openai, tmp_path):
    fake_openai.script(Reply(text="half of a wrong answer", drop_after=3), Reply(text="the right answer"))
    agent = make_agent(fake_openai, tmp_path)
    events = await run(agent)
    assert finished(events).result == "the right answer"
    assert agent.messages[-1] == {"role": "assistant", "content": "the right answer"}
    assert any(isinstance(e, TextDelta) for e in events)


async def test_backend_failure_ends_the_turn_with_a_typed_error(fake_openai, tmp_path):
    fake_openai.script(Fault(401))
    agent = make_agent(fake_openai, tmp_path)
    events = await run(agent)
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert errors and errors[0].kind == "config"
    assert finished(events).stop_reason == "error"


async def test_cancel_before_the_turn_starts_still_finishes(fake_openai, tmp_path):
    fake_openai.script(Reply(text="never sent"))
    agent = make_agent(fake_openai, tmp_path)
    events = []
    async for event in agent.run("go"):
        events.append(event)
        agent.cancel()
    assert isinstance(events[-1], TurnFinished) and events[-1].stop_reason == "cancelled"


async def test_a_full_disk_for_the_session_log_does_not_stop_the_turn(fake_openai, tmp_path):
    from kimicode.agent.session import SessionLog

    fake_openai.script(Reply(tool_calls=[ToolCall("list_dir", {})]), Reply(text="still working"))
    agent = make_agent(fake_openai, tmp_path)
    agent.session = SessionLog("full", Path("/dev/full"))  # every write fails with ENOSPC
    events = await run(agent)
    assert finished(events).result == "still working"


async def test_content_filter_is_a_refusal_not_a_success(fake_openai, tmp_path):
    fake_openai.script(Reply(text="", finish_reason="content_filter"))
    events = await run(make_agent(fake_openai, tmp_path))
    assert finished(events).stop_reason == "refusal"
    assert "content filter" in finished(events).result


async def test_an_answer_cut_by_the_token_limit_says_so(fake_openai, tmp_path):
    fake_openai.script(Reply(text="The answer is", finish_reason="length"))
    events = await run(make_agent(fake_openai, tmp_path))
    assert finished(events).stop_reason == "length"
    assert finished(events).result.startswith("The answer is") and "token limit" in finished(events).result


async def test_approval_answered_after_a_cancel_does_not_raise(fake_openai, tmp_path):
    fake_openai.script(Reply(tool_calls=[ToolCall("write_file", {"path": "x", "content": "y"})]))
    agent = make_agent(fake_openai, tmp_path, mode="ask")
    pending = []
    async for event in agent.run("go"):
        if isinstance(event, ApprovalRequested):
            pending.append(event)
            agent.cancel()
    pending[0].reply.set_result(Approval(Decision.ALLOW_ONCE))  # the TUI answering late
    assert not (tmp_path / "x").exists()
    assert_history_valid(agent.messages)
