"""Tests for the fake OpenAI server, driven over real HTTP by the real openai SDK."""

import asyncio
import json
import time

import openai
import pytest

from tests.fakes.openai_server import NO_SCRIPT_LEFT, Fault, Reply, ToolCall

MODEL = "kimi-k2-0905-preview"
MESSAGES = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object", "properties": {}}}}]


@pytest.fixture
async def client(fake_openai):
    client = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0)
    yield client
    await client.close()


async def open_stream(client, **kwargs):
    return await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}, **kwargs
    )


async def collect(client, **kwargs):
    return [chunk async for chunk in await open_stream(client, **kwargs)]


def deltas(chunks):
    return [chunk.choices[0].delta for chunk in chunks if chunk.choices]


async def test_streams_reasoning_then_text(fake_openai, client):
    fake_openai.script(Reply("Hello there, world!", reasoning="Let me think about it."))
    chunks = await collect(client)
    assert deltas(chunks)[0].role == "assistant"
    # Each delta carries reasoning or content, never both, and all reasoning comes first.
    kinds = [
        ("reasoning", d.reasoning_content) if getattr(d, "reasoning_content", None) else ("content", d.content)
        for d in deltas(chunks)
        if getattr(d, "reasoning_content", None) or d.content
    ]
    assert "".join(piece for kind, piece in kinds if kind == "reasoning") == "Let me think about it."
    assert "".join(piece for kind, piece in kinds if kind == "content") == "Hello there, world!"
    assert [kind for kind, _ in kinds] == ["reasoning"] * 3 + ["content"] * 3  # 8-character pieces
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


async def test_tool_calls_assemble_from_fragments(fake_openai, client):
    calls = [
        ToolCall("read_file", {"path": "src/main.py", "limit": 200}),
        ToolCall("bash", {"command": "ls -la"}, id="call_custom"),
        ToolCall("edit", raw_arguments='{"path": "a.py", '),  # malformed on purpose
    ]
    fake_openai.script(Reply("Looking.", tool_calls=calls, chunk_size=5))
    chunks = await collect(client, tools=TOOLS)

    assembled: dict[int, dict] = {}
    for delta in deltas(chunks):
        for fragment in delta.tool_calls or []:
            if fragment.index not in assembled:  # the first fragment names the call
                assert fragment.type == "function" and fragment.function.arguments == ""
                assembled[fragment.index] = {"id": fragment.id, "name": fragment.function.name, "arguments": ""}
            else:
                assert fragment.id is None and fragment.function.name is None
                assert 0 < len(fragment.function.arguments) <= 5
                assembled[fragment.index]["arguments"] += fragment.function.arguments
    expected = [{"id": c.id, "name": c.name, "arguments": c.arguments_json} for c in calls]
    assert [assembled[i] for i in sorted(assembled)] == expected
    assert json.loads(assembled[0]["arguments"]) == calls[0].arguments
    assert calls[0].id.startswith("call_") and calls[0].id != calls[2].id
    assert chunks[-2].choices[0].finish_reason == "tool_calls"


async def test_usage_chunk_top_level_or_in_choice(fake_openai, client):
    fake_openai.script(Reply("ok", usage=(1200, 30, 1024)), Reply("ok", usage=(50, 5, 40), usage_in_choice=True))

    last = (await collect(client))[-1]
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (1200, 30, 1230)
    assert last.usage.prompt_tokens_details.cached_tokens == 1024

    chunks = await collect(client)  # Moonshot style: no usage chunk, usage sits in the finish choice
    assert all(chunk.usage is None for chunk in chunks)
    finish = chunks[-1].choices[0]
    assert finish.finish_reason == "stop"
    usage = {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55, "cached_tokens": 40}
    assert finish.model_extra["usage"] == usage


async def test_faults_raise_the_matching_sdk_errors(fake_openai, client):
    fake_openai.script(Fault(429, {"Retry-After": "1"}), Fault(401))
    with pytest.raises(openai.RateLimitError) as caught:
        await collect(client)
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)


async def test_dropped_stream_raises_while_iterating(fake_openai, client):
    fake_openai.script(Reply("a long answer that gets cut off", chunk_size=4, drop_after=3))
    received = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in await open_stream(client):
            received.append(chunk)
    assert len(received) == 3


async def test_hanging_stream_stalls_until_the_server_closes(fake_openai, client):
    fake_openai.script(Reply("partial answer", hang=True))
    stream = await open_stream(client)
    received = []

    async def consume():
        async for chunk in stream:
            received.append(chunk)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    assert not task.done()
    assert "".join(d.content or "" for d in deltas(received)) == "partial answer"
    assert all(c.choices[0].finish_reason is None for c in received)

    started = time.monotonic()
    fake_openai.close()
    with pytest.raises(openai.APIConnectionError):
        await asyncio.wait_for(task, 2)
    assert time.monotonic() - started < 1


async def test_records_request_bodies_and_headers(fake_openai, client):
    fake_openai.script(Reply("one"), Reply("two"))
    await collect(client, tools=TOOLS, temperature=0.6)
    history = [*MESSAGES, {"role": "assistant", "content": "one"}, {"role": "user", "content": "again"}]
    completion = await client.chat.completions.create(model=MODEL, messages=history)
    assert completion.choices[0].message.content == "two"

    first, second = fake_openai.requests
    assert first["messages"] == MESSAGES and first["tools"] == TOOLS and first["temperature"] == 0.6
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert second["messages"] == history and "stream" not in second
    assert fake_openai.received[0].headers["Authorization"] == "Bearer test"


def test_non_streaming_completion_with_sync_client(fake_openai):
    call = ToolCall("bash", {"command": "pwd"})
    fake_openai.script(Reply("Running.", reasoning="Need the cwd.", tool_calls=[call], usage=(10, 2, 4)))
    with openai.OpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0) as client:
        completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Running."
    assert choice.message.model_extra["reasoning_content"] == "Need the cwd."
    assert choice.message.tool_calls[0].id == call.id
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"command": "pwd"}
    assert completion.usage.prompt_tokens_details.cached_tokens == 4


async def test_empty_script_fails_loudly_unless_a_responder_is_set(fake_openai, client):
    with pytest.raises(openai.InternalServerError, match=NO_SCRIPT_LEFT):
        await collect(client)
    fake_openai.responder = lambda body: Reply(f"echo: {body['messages'][-1]['content']}")
    chunks = await collect(client)
    assert "".join(d.content or "" for d in deltas(chunks)) == "echo: hi"


async def test_models_list_and_unknown_paths(client):
    models = await client.models.list()
    assert MODEL in [model.id for model in models.data]
    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model=MODEL, input="hi")
