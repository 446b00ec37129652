"""The OpenAI-compatible backend against a real HTTP server speaking the protocol."""

import json
import time

import pytest

from kimicode.backends.base import (
    BackendError,
    ChatRequest,
    Finish,
    ModelInfo,
    ReasoningDelta,
    Retrying,
    TextDelta,
    ToolCallDone,
    Usage,
)
from kimicode.backends.openai_compat import OpenAICompatBackend, RetryPolicy
from tests.fakes.openai_server import Fault, RawStream, Reply, ToolCall

INFO = ModelInfo("kimi-k2-test", input_price=0.6, output_price=2.5, cached_input_price=0.15)
TOOLS = [{"type": "function", "function": {"name": n, "description": "", "parameters": {"type": "object"}}}
         for n in ("read_file", "grep")]


def backend(server, **retry):
    policy = RetryPolicy(**{"max_attempts": 3, "base_delay": 0.01, "max_delay": 5.0, **retry})
    return OpenAICompatBackend(base_url=server.base_url, api_key="test-key", info=INFO, retry=policy)


async def collect(server, messages=None, tools=TOOLS, **retry):
    events = []
    async for event in backend(server, **retry).stream(ChatRequest(messages or [{"role": "user", "content": "hi"}], tools)):
        events.append(event)
    return events


def text_of(events):
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_streams_text_reasoning_usage_and_finish(fake_openai):
    fake_openai.script(Reply(text="Hello there, world", reasoning="thinking hard", usage=(1000, 50, 400)))
    events = await collect(fake_openai)
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "thinking hard"
    assert text_of(events) == "Hello there, world"
    assert [e for e in events if isinstance(e, Usage)] == [Usage(1000, 50, 400)]
    assert events[-1] == Finish("stop")
    assert INFO.cost(Usage(1000, 50, 400)) == pytest.approx((600 * 0.6 + 400 * 0.15 + 50 * 2.5) / 1e6)


async def test_sends_the_request_an_openai_server_expects(fake_openai):
    fake_openai.script(Reply(text="ok"))
    history = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "reasoning_content": "r",
         "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "grep", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "nothing"},
    ]
    await collect(fake_openai, history)
    received = fake_openai.received[0]
    body = received.body
    assert received.headers["authorization"] == "Bearer test-key"
    assert body["model"] == "kimi-k2-test" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["tools"] == TOOLS and body["tool_choice"] == "auto"
    assert body["temperature"] == 0.6 and body["max_tokens"] == INFO.max_output
    assert body["messages"][1]["tool_calls"][0]["id"] == "functions.grep:0"
    assert body["messages"][1]["reasoning_content"] == "r"
    assert body["messages"][2]["tool_call_id"] == "functions.grep:0"


async def test_tool_calls_are_assembled_across_chunks(fake_openai):
    calls = [ToolCall("read_file", {"path": "src/app.py", "limit": 40}), ToolCall("grep", {"pattern": "def main"})]
    fake_openai.script(Reply(text="Looking.", tool_calls=calls, chunk_size=3))
    events = await collect(fake_openai)
    done = [e for e in events if isinstance(e, ToolCallDone)]
    assert [(d.id, d.name, json.loads(d.arguments), d.arguments_error) for d in done] == [
        (calls[0].id, "read_file", {"path": "src/app.py", "limit": 40}, None),
        (calls[1].id, "grep", {"pattern": "def main"}, None),
    ]
    assert events[-1] == Finish("tool_calls")


async def test_mangled_names_and_bad_json_are_repaired_or_flagged(fake_openai):
    fake_openai.script(Reply(tool_calls=[
        ToolCall("functions.read_file:0", raw_arguments='{"path": "a.py",}'),
        ToolCall("grep", raw_arguments='{"pattern": '),
    ]))
    done = [e for e in await collect(fake_openai) if isinstance(e, ToolCallDone)]
    assert done[0].name == "read_file" and json.loads(done[0].arguments) == {"path": "a.py"}
    assert done[0].arguments_error is None
    assert done[1].name == "grep" and "invalid JSON" in done[1].arguments_error


async def test_tool_call_markup_leaked_into_content_becomes_tool_calls(fake_openai):
    leaked = ("I'll check.<|tool_calls_section_begin|><|tool_call_begin|>functions.grep:3"
              '<|tool_call_argument_begin|>{"pattern": "<T>"}<|tool_call_end|><|tool_calls_section_end|>')
    fake_openai.script(Reply(text=leaked, chunk_size=5))
    events = await collect(fake_openai)
    assert text_of(events) == "I'll check."
    done = [e for e in events if isinstance(e, ToolCallDone)]
    assert [(d.name, json.loads(d.arguments)) for d in done] == [("grep", {"pattern": "<T>"})]
    assert events[-1] == Finish("tool_calls")


async def test_moonshot_style_usage_inside_the_choice(fake_openai):
    fake_openai.script(Reply(text="ok", usage=(200, 10, 150), usage_in_choice=True))
    events = await collect(fake_openai)
    assert [e for e in events if isinstance(e, Usage)] == [Usage(200, 10, 150)]


async def test_429_honours_retry_after_then_succeeds(fake_openai):
    fake_openai.script(Fault(429, {"Retry-After": "1"}), Reply(text="finally"))
    started = time.monotonic()
    events = await collect(fake_openai)
    retries = [e for e in events if isinstance(e, Retrying)]
    assert len(retries) == 1 and retries[0].delay == 1.0 and "429" in retries[0].reason
    assert time.monotonic() - started >= 1.0
    assert text_of(events) == "finally"


async def test_server_errors_and_dropped_streams_are_retried(fake_openai):
    fake_openai.script(Fault(500), Reply(text="partial answer that gets cut", drop_after=3), Reply(text="whole"))
    events = await collect(fake_openai)
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("Retrying") == 2
    # The caller discards what came before the last Retrying; what follows is the good attempt.
    last_retry = max(i for i, e in enumerate(events) if isinstance(e, Retrying))
    assert text_of(events[last_retry:]) == "whole"
    assert len(fake_openai.requests) == 3


async def test_a_stalled_stream_times_out_and_is_retried(fake_openai):
    fake_openai.script(Reply(text="stuck", hang=True), Reply(text="fresh"))
    b = OpenAICompatBackend(base_url=fake_openai.base_url, api_key="k", info=INFO,
                            retry=RetryPolicy(3, 0.01, 1.0), request_timeout=0.5)
    events = [e async for e in b.stream(ChatRequest([{"role": "user", "content": "hi"}]))]
    assert any(isinstance(e, Retrying) for e in events)
    assert events[-1] == Finish("stop")


async def test_gives_up_after_max_attempts_with_a_clear_error(fake_openai):
    fake_openai.script(Fault(503), Fault(503), Fault(503))
    with pytest.raises(BackendError) as exc:
        await collect(fake_openai, max_attempts=3)
    assert exc.value.kind == "exhausted"
    assert "after 3 attempts" in str(exc.value) and "503" in str(exc.value)


@pytest.mark.parametrize(("status", "kind", "words"), [(401, "config", "API key"), (404, "config", "not found"),
                                                        (400, "request", "rejected")])
async def test_client_errors_are_not_retried(fake_openai, status, kind, words):
    fake_openai.script(Fault(status), Reply(text="never"))
    with pytest.raises(BackendError) as exc:
        await collect(fake_openai)
    assert exc.value.kind == kind and words in str(exc.value)
    assert len(fake_openai.requests) == 1


def chunk(delta=None, finish=None, usage=None, choices=True, **choice_extra):
    body = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": []}
    if choices:
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish, **choice_extra}]
    if usage:
        body["usage"] = usage
    return body


def call_piece(name=None, arguments="", call_id=None, index=None):
    piece = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id:
        piece["id"] = call_id
    if index is not None:
        piece["index"] = index
    return piece


async def test_chunks_without_a_delta_are_tolerated(fake_openai):
    fake_openai.script(RawStream([chunk({"role": "assistant", "content": "ok"}), chunk(None, "content_filter"), "[DONE]"]))
    events = await collect(fake_openai)
    assert text_of(events) == "ok" and events[-1] == Finish("content_filter")


async def test_tool_calls_without_index_or_with_repeated_names(fake_openai):
    fake_openai.script(RawStream([
        chunk({"tool_calls": [call_piece("read_file", '{"path":', "a")]}),
        chunk({"tool_calls": [call_piece("read_file", ' "x.py"}')]}),  # name repeated, no id: same call
        chunk({"tool_calls": [call_piece("grep", '{"pattern": "y"}', "b")]}),  # a new id: a new call
        chunk({}, "tool_calls"),
        "[DONE]",
    ]))
    done = [e for e in await collect(fake_openai) if isinstance(e, ToolCallDone)]
    assert [(d.id, d.name, json.loads(d.arguments)) for d in done] == [
        ("a", "read_file", {"path": "x.py"}), ("b", "grep", {"pattern": "y"})]


async def test_a_clean_end_with_usage_but_no_finish_reason_is_accepted(fake_openai):
    fake_openai.script(RawStream([chunk({"content": "done"}), chunk(choices=False, usage={"prompt_tokens": 5, "completion_tokens": 1}), "[DONE]"]))
    events = await collect(fake_openai)
    assert text_of(events) == "done" and Usage(5, 1, 0) in events
    assert len(fake_openai.requests) == 1


async def test_lone_surrogates_from_the_model_are_replaced(fake_openai):
    fake_openai.script(RawStream(['{"id":"c","object":"chat.completion.chunk","created":0,"model":"m",'
                                  '"choices":[{"index":0,"delta":{"content":"bad \\ud83d text"},"finish_reason":"stop"}]}',
                                  "[DONE]"]))
    text = text_of(await collect(fake_openai))
    assert text == "bad ? text"
    text.encode("utf-8")


async def test_malformed_stream_data_is_retried(fake_openai):
    fake_openai.script(RawStream(["{not json"]), Reply(text="recovered"))
    events = await collect(fake_openai)
    assert any(isinstance(e, Retrying) and "malformed" in e.reason for e in events)
    assert text_of(events).endswith("recovered")


async def test_error_events_inside_the_stream(fake_openai):
    overloaded = {"error": {"message": "engine overloaded", "type": "server_error", "code": None}}
    too_long = {"error": {"message": "prompt too long", "type": "invalid_request_error", "code": "context_length_exceeded"}}
    fake_openai.script(RawStream([overloaded]), Reply(text="second try"), RawStream([too_long]))
    events = await collect(fake_openai)
    assert [e.reason for e in events if isinstance(e, Retrying)] == ["stream error: engine overloaded"]
    with pytest.raises(BackendError, match="prompt too long") as exc:
        await collect(fake_openai)
    assert exc.value.kind == "context" and len(fake_openai.requests) == 3


async def test_quota_errors_are_not_retried(fake_openai):
    quota = {"error": {"message": "You exceeded your current quota", "type": "exceeded_current_quota_error"}}
    fake_openai.script(Fault(429, body=quota), Reply(text="never"))
    with pytest.raises(BackendError, match="quota or billing limit"):
        await collect(fake_openai)
    assert len(fake_openai.requests) == 1


@pytest.mark.parametrize("value", ["soon", "Wed, 21 Oct 2015 07:28:00 GMT", ""])
async def test_unusual_retry_after_values_fall_back_to_backoff(fake_openai, value):
    fake_openai.script(Fault(429, {"Retry-After": value}), Reply(text="ok"))
    events = await collect(fake_openai)
    (retry,) = [e for e in events if isinstance(e, Retrying)]
    assert 0 <= retry.delay <= 0.01  # base_delay 0.01 (a past date counts as "now")
