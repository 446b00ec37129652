"""K2 repairs: history ids, tool names, JSON arguments, leaked tool-call markup."""

import json

import pytest

from kimicode.backends.repair import LeakedMarkupFilter, normalize_history, repair_arguments, repair_tool_name


def test_history_ids_become_k2_ids_with_a_running_index():
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "read_file", "arguments": "{}"}},
            {"id": "call_def", "type": "function", "function": {"name": "grep", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "a"},
        {"role": "tool", "tool_call_id": "call_def", "content": "b"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "shell", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "x", "content": "c"},
    ]
    out = normalize_history(messages)
    ids = [c["id"] for m in out for c in m.get("tool_calls") or ()]
    assert ids == ["functions.read_file:0", "functions.grep:1", "functions.shell:2"]
    assert [m["tool_call_id"] for m in out if m["role"] == "tool"] == ids
    assert messages[1]["tool_calls"][0]["id"] == "call_abc"  # the caller's history is untouched


def test_invalid_arguments_never_reach_the_provider_as_invalid_json():
    messages = [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"path": '}}]}]
    sent = normalize_history(messages)[0]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(sent) == {"_invalid_arguments": '{"path": '}


def test_reasoning_is_sent_back_only_for_the_current_tool_loop():
    messages = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "done", "reasoning_content": "old thoughts"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "", "reasoning_content": "current thoughts", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "r"},
    ]
    out = normalize_history(messages)
    assert "reasoning_content" not in out[1]
    assert out[3]["reasoning_content"] == "current thoughts"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("read_file", "read_file"),
        ("functions.read_file:3", "read_file"),
        ("functions.read_file", "read_file"),
        ("read_file:0", "read_file"),
        (" Read_File ", "read_file"),
        ("launch_rockets", "launch_rockets"),  # unknown names pass through; the loop answers them
    ],
)
def test_tool_names(name, expected):
    assert repair_tool_name(name, {"read_file", "grep"}) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ("", {}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('{"a": [1, 2,],}', {"a": [1, 2]}),
        ('{"text": "line1\nline2"}', {"text": "line1\nline2"}),  # raw newline inside a string
        ('"{\\"path\\": \\"a.py\\"}"', {"path": "a.py"}),  # double-encoded
    ],
)
def test_repairable_arguments(raw, expected):
    text, error = repair_arguments(raw)
    assert error is None
    assert json.loads(text) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [('{"path": "a.py"', "invalid JSON"), ("[1, 2]", "must be a JSON object"), ("nonsense", "invalid JSON")],
)
def test_unrepairable_arguments_are_flagged(raw, why):
    text, error = repair_arguments(raw)
    assert text == raw
    assert why in error


def feed_all(pieces):
    f = LeakedMarkupFilter()
    shown = "".join(f.feed(p) for p in pieces)
    rest, section = f.finish()
    return shown + rest, section


def test_plain_text_passes_through_even_with_angle_brackets():
    assert feed_all(["a <b> ", "c <|im", "_end|> d", " <|tool"]) == ("a <b> c <|im_end|> d <|tool", None)


def test_leaked_section_is_withheld_even_when_split_across_chunks():
    pieces = ["Let me look.", "<|tool_calls_sec", "tion_begin|><|tool_call_begin|>functions.grep:0",
              "<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>"]
    shown, section = feed_all(pieces)
    assert shown == "Let me look."
    assert section.startswith("<|tool_calls_section_begin|>") and "functions.grep:0" in section
