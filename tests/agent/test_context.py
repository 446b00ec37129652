"""Context management: compaction invariants, compaction in a live turn, token budget, loop guard."""

import json
import random

import pytest

from kimicode.agent.context import plan_compaction
from kimicode.agent.loop import Agent, Limits
from kimicode.agent.session import SessionLog, load_session
from kimicode.approval import ApprovalPolicy
from kimicode.backends.base import ModelInfo
from kimicode.backends.openai_compat import OpenAICompatBackend, RetryPolicy
from kimicode.events import Compacted, TurnFinished
from kimicode.tools.base import ToolContext, ToolRegistry
from kimicode.tools.plan import UpdatePlan
from kimicode.tools.registry import builtin_tools
from kimicode.workspace import Workspace
from tests.agent.test_loop import assert_history_valid, run
from tests.fakes.openai_server import Fault, Reply, ToolCall


def random_history(rng: random.Random) -> list[dict]:
    messages = [{"role": "system", "content": "sys"}]
    call_index = 0
    for turn in range(rng.randint(1, 5)):
        messages.append({"role": "user", "content": f"request {turn} " + "x" * rng.randint(0, 400)})
        for _ in range(rng.randint(0, 6)):
            calls = []
            for _ in range(rng.randint(0, 3)):
                calls.append({"id": f"c{call_index}", "type": "function",
                              "function": {"name": "read_file", "arguments": "{}"}})
                call_index += 1
            messages.append({"role": "assistant", "content": "step", **({"tool_calls": calls} if calls else {})})
            for call in calls:
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": "o" * rng.randint(0, 20_000)})
        if rng.random() < 0.7:
            messages.append({"role": "assistant", "content": "done"})
    return messages


@pytest.mark.parametrize("seed", range(200))
def test_compaction_keeps_system_latest_request_and_call_result_pairs(seed):
    rng = random.Random(seed)
    messages = random_history(rng)
    plan = plan_compaction(messages, keep_tokens=rng.choice([10, 500, 3_000, 20_000]))
    if plan is None:
        return
    compacted = [messages[0], {"role": "user", "content": "summary"}]
    compacted += [plan.latest_request] if plan.latest_request else []
    compacted += plan.kept
    assert compacted[0] == messages[0]
    latest = [m for m in messages if m["role"] == "user"][-1]
    assert latest in compacted
    assert_history_valid(compacted)
    # Kept messages are the original tail, with only tool outputs shortened.
    tail = messages[len(messages) - len(plan.kept):]
    assert [(m["role"], m.get("tool_call_id")) for m in plan.kept] == [(m["role"], m.get("tool_call_id")) for m in tail]
    assert not plan.older or plan.older[0] is messages[1]


def make_agent(server, root, window, limits=Limits(), session=None):
    info = ModelInfo("k2-small", context_window=window, input_price=1.0, output_price=1.0)
    backend = OpenAICompatBackend(base_url=server.base_url, api_key="k", info=info, retry=RetryPolicy(2, 0.01, 0.05))
    return Agent(backend, ToolRegistry([*builtin_tools(), UpdatePlan()]), ApprovalPolicy("auto", root),
                 ToolContext(Workspace(root)), "system prompt", limits, session)


def summariser(script):
    """Answer summary requests (no tools declared) with a summary, the rest from `script`;
    prompt tokens are counted from the request's size, as a server would."""
    def respond(body):
        prompt_tokens = len(json.dumps(body["messages"])) // 3
        if not body.get("tools"):
            return Reply(text="SUMMARY: read part.txt many times, found nothing", usage=(prompt_tokens, 50, 0))
        reply = script.pop(0)
        if isinstance(reply, Reply):
            reply.usage = (prompt_tokens, 20, 0)
        return reply
    return respond


async def test_a_filling_context_is_compacted_and_the_turn_goes_on(fake_openai, tmp_path):
    (tmp_path / "part.txt").write_text("line of text\n" * 250)  # ~5 KB, ~1.6k tokens per read
    plan = ToolCall("update_plan", {"items": [{"step": "read part.txt", "status": "in_progress"}]})
    script = [Reply(tool_calls=[plan])]
    script += [Reply(tool_calls=[ToolCall("read_file", {"path": "part.txt", "offset": i + 1})]) for i in range(14)]
    script += [Reply(text="all done")]
    fake_openai.responder = summariser(script)
    session = SessionLog("ctx", tmp_path / "ctx.jsonl")
    session.append("meta", id="ctx")
    agent = make_agent(fake_openai, tmp_path, window=20_000, session=session)
    events = await run(agent, "inspect part.txt")

    assert events[-1] == TurnFinished("end_turn", "all done")
    compactions = [e for e in events if isinstance(e, Compacted)]
    assert compactions and all(c.tokens_after < c.tokens_before for c in compactions)
    assert compactions[0].messages_summarized > 0
    summary_request = next(b for b in fake_openai.requests if not b.get("tools"))
    assert "inspect part.txt" in summary_request["messages"][1]["content"]
    for body in fake_openai.requests:  # no request ever went over the window
        assert len(json.dumps(body["messages"])) // 3 < 20_000
    after = fake_openai.requests[-1]["messages"]
    assert after[0]["content"] == "system prompt"
    assert "SUMMARY: read part.txt" in after[1]["content"] and "[in_progress] read part.txt" in after[1]["content"]
    assert {"role": "user", "content": "inspect part.txt"} in after
    assert_history_valid(after)
    # The transcript replays to the compacted history, and compaction tokens were counted.
    assert load_session(tmp_path / "ctx.jsonl").messages == agent.messages
    summary_tokens = sum(len(json.dumps(b["messages"])) // 3 for b in fake_openai.requests if not b.get("tools"))
    assert summary_tokens > 0
    assert agent.usage.prompt_tokens == sum(len(json.dumps(b["messages"])) // 3 for b in fake_openai.requests)


def test_the_request_survives_compaction_even_after_kimicode_notes():
    request = {"role": "user", "content": "the real request"}
    messages = [{"role": "system", "content": "s"}, request]
    for i in range(6):
        call = {"id": f"c{i}", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}
        messages += [{"role": "assistant", "content": "", "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": f"c{i}", "content": "x" * 3_000}]
    messages.append({"role": "user", "content": "[kimicode ran the tests] 1 failed"})
    messages.append({"role": "assistant", "content": "fixing"})
    plan = plan_compaction(messages, keep_tokens=500, request=request)
    assert plan.latest_request is request


async def test_a_context_overflow_error_compacts_and_retries_once(fake_openai, tmp_path):
    (tmp_path / "a.txt").write_text("abc\n" * 500)
    overflow = Fault(400, body={"error": {"message": "This model's maximum context length is 8192 tokens",
                                          "type": "invalid_request_error", "code": "context_length_exceeded"}})
    script = [Reply(tool_calls=[ToolCall("read_file", {"path": "a.txt"})]),
              Reply(tool_calls=[ToolCall("read_file", {"path": "a.txt", "offset": 3})]),
              overflow, Reply(text="fits now")]
    fake_openai.responder = summariser(script)
    events = await run(make_agent(fake_openai, tmp_path, window=1_000_000), "go")
    assert events[-1].result == "fits now"
    assert any(isinstance(e, Compacted) for e in events)


async def test_token_budget_counts_every_call(fake_openai, tmp_path):
    fake_openai.responder = lambda body: Reply(tool_calls=[ToolCall("list_dir", {})], usage=(4_000, 100, 0))
    agent = make_agent(fake_openai, tmp_path, window=1_000_000, limits=Limits(max_tokens=10_000))
    events = await run(agent)
    assert events[-1].stop_reason == "max_tokens"
    assert len(fake_openai.requests) == 3  # 4.1k, 8.2k, 12.3k: stops before a fourth


async def test_identical_failing_calls_are_warned_then_stopped(fake_openai, tmp_path):
    fake_openai.responder = lambda body: Reply(tool_calls=[ToolCall("read_file", {"path": "nope.py"}, id=None)])
    agent = make_agent(fake_openai, tmp_path, window=1_000_000)
    events = await run(agent)
    assert events[-1].stop_reason == "loop" and "read_file failed 5 times" in events[-1].result
    results = [m["content"] for m in agent.messages if m["role"] == "tool"]
    assert "failed 3 times" in results[2] and "failed 3 times" not in results[1]
    assert_history_valid(agent.messages)


async def test_repetitive_work_that_succeeds_or_varies_is_not_stopped(fake_openai, tmp_path):
    (tmp_path / "f.txt").write_text("x\n")
    calls = [ToolCall("read_file", {"path": "f.txt"}) for _ in range(6)]
    calls += [ToolCall("read_file", {"path": f"missing{i}.py"}) for i in range(6)]
    fake_openai.script(*[Reply(tool_calls=[c]) for c in calls], Reply(text="finished"))
    events = await run(make_agent(fake_openai, tmp_path, window=1_000_000))
    assert events[-1].result == "finished"


async def test_a_turn_stopped_after_compacting_leaves_a_valid_history(fake_openai, tmp_path):
    (tmp_path / "part.txt").write_text("line of text\n" * 250)
    script = [Reply(tool_calls=[ToolCall("read_file", {"path": "part.txt", "offset": i + 1})]) for i in range(12)]
    script += [Reply(tool_calls=[ToolCall("shell", {"command": "sleep 20"}), ToolCall("list_dir", {})])]
    fake_openai.responder = summariser(script)
    agent = make_agent(fake_openai, tmp_path, window=20_000, limits=Limits(timeout=3))
    events = await run(agent, "go")
    assert any(isinstance(e, Compacted) for e in events) and events[-1].stop_reason == "timeout"
    assert_history_valid(agent.messages)


async def test_the_same_failure_after_an_edit_is_a_new_attempt(fake_openai, tmp_path):
    (tmp_path / "hang.py").write_text("while True: pass\n")
    rounds = []
    for i in range(5):
        rounds += [Reply(tool_calls=[ToolCall("shell", {"command": "python3 hang.py", "timeout": 0.3})]),
                   Reply(tool_calls=[ToolCall("write_file", {"path": "hang.py", "content": f"# try {i}\nwhile True: pass\n"})])]
    fake_openai.script(Reply(tool_calls=[ToolCall("read_file", {"path": "hang.py"})]), *rounds, Reply(text="gave up"))
    events = await run(make_agent(fake_openai, tmp_path, window=1_000_000), "fix hang.py")
    assert events[-1].stop_reason == "end_turn" and events[-1].result == "gave up"


async def test_an_oversized_kept_part_is_not_compacted_again_and_again(fake_openai, tmp_path):
    huge_request = "please consider this context: " + "word " * 4_000  # ~20 KB, above the window alone
    script = [Reply(tool_calls=[ToolCall("list_dir", {})]) for _ in range(6)] + [Reply(text="done")]
    fake_openai.responder = summariser(script)
    events = await run(make_agent(fake_openai, tmp_path, window=6_000), huge_request)
    assert events[-1].result == "done"
    assert len([e for e in events if isinstance(e, Compacted)]) <= 1
    assert len([b for b in fake_openai.requests if not b.get("tools")]) <= 1  # summary calls
