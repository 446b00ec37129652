"""The TUI's pure parts: slash parsing, approval previews, status text, git state."""

import subprocess

import pytest

from kimicode.events import UsageUpdated
from kimicode.tui.commands import SLASH_COMMANDS, parse_slash
from kimicode.tui.git_status import git_state
from kimicode.tui.preview import MAX_PREVIEW_LINES, call_preview
from kimicode.tui.widgets.status import StatusInfo, render_status, tokens


def test_slash_commands_parse_with_arguments_and_reject_unknown_ones():
    command, argument = parse_slash("  /model   kimi-k2-turbo-preview ")
    assert command.name == "model" and argument == "kimi-k2-turbo-preview"
    assert parse_slash("/HELP")[0].name == "help"
    assert parse_slash("plain prompt") is None
    assert parse_slash("//not a command") is None
    assert parse_slash("/etc/hosts looks wrong") is None  # a path
    with pytest.raises(ValueError, match="unknown command /nope"):
        parse_slash("/nope")
    assert {c.name for c in SLASH_COMMANDS} >= {"help", "model", "mode", "plan", "undo", "diff", "compact", "clear",
                                                 "cost", "sessions", "resume", "init", "exit"}


def test_previews_show_the_change_an_approval_is_about():
    diff, lexer = call_preview("edit_file", {"path": "a.py", "old_string": "x = 1\ny = 2\n", "new_string": "x = 1\ny = 3\n"})
    assert lexer == "diff" and "-y = 2" in diff and "+y = 3" in diff and "--- a/a.py" in diff
    multi, _ = call_preview("multi_edit", {"path": "a.py", "edits": [{"old_string": "a", "new_string": "b"},
                                                                      {"old_string": "c", "new_string": "d"}]})
    assert "-a" in multi and "+b" in multi and "-c" in multi and "+d" in multi
    assert call_preview("shell", {"command": "git push"}) == ("git push", "bash")
    written, _ = call_preview("write_file", {"path": "n.py", "content": "\n".join(map(str, range(500)))})
    assert written.startswith("+0\n+1") and written.endswith(f"… {500 - MAX_PREVIEW_LINES} more lines")
    assert call_preview("grep", {"pattern": "TODO"}) == ("pattern: TODO", "text")
    assert call_preview("multi_edit", {"path": "a.py", "edits": "garbage"})[0] == ""  # bad arguments never crash


def test_status_line_shows_usage_mode_and_git_state():
    usage = UsageUpdated(prompt_tokens=12_345, completion_tokens=678, cached_tokens=6_172, cost_usd=0.01234,
                         context_tokens=209_715, context_window=262_144)
    line = render_status(StatusInfo("kimi-k2", "moonshot", "yolo", usage, "main", True)).plain
    for part in (" yolo ", "kimi-k2 · moonshot", "↑12.3k ↓678", "cache 50%", "$0.0123", "ctx 80%", "⎇ main*"):
        assert part in line
    assert "⎇" not in render_status(StatusInfo(branch=None)).plain
    assert "esc to interrupt" in render_status(StatusInfo(busy=True)).plain
    assert (tokens(999), tokens(1_000), tokens(2_500_000)) == ("999", "1.0k", "2.50M")


def test_git_state(tmp_path):
    assert git_state(tmp_path) == (None, False)
    subprocess.run(["git", "init", "-q", "-b", "work"], cwd=tmp_path, check=True)
    assert git_state(tmp_path) == ("work", False)
    (tmp_path / "f").write_text("x")
    assert git_state(tmp_path) == ("work", True)


def test_a_narrow_status_line_keeps_the_mode_model_cost_and_context():
    usage = UsageUpdated(2_400, 120, 1_800, 0.0011, 2_400, 262_144)
    info = StatusInfo("kimi-k2-0905-preview", "custom", "yolo", usage, "main", True)
    wide = render_status(info).plain
    narrow = render_status(info, 60).plain
    assert "shift+tab mode" in wide and "custom" in wide
    assert len(narrow) <= 60
    assert narrow.startswith(" yolo  kimi-k2-0905-preview") and "$0.0011" in narrow and "ctx 1%" in narrow
    assert "custom" not in narrow and "shift+tab" not in narrow
    busy = render_status(StatusInfo("kimi-k2-0905-preview", "custom", "ask", usage, "main", busy=True), 60).plain
    assert "esc to interrupt" in busy  # while a turn runs, how to stop it matters more than the rest


def test_long_answers_are_cut_into_segments_only_between_blocks():
    import random

    from kimicode.tui.widgets.chat import SEGMENT_LINES, segment_end

    assert segment_end("a\n\n" * 10) is None  # short: one live segment
    rng = random.Random(7)
    lines = []
    for _ in range(120):
        block = rng.choice(["para", "list", "code"])
        if block == "code":
            lines += ["```python", *(f"x{i} = {i}" for i in range(rng.randint(1, 30))), "", "```", ""]
        elif block == "list":
            lines += [f"- item {i}" for i in range(rng.randint(1, 5))] + [""]
        else:
            lines += ["Some words here.", ""]
    text = "\n".join(lines)
    segments, rest = [], text
    while (cut := segment_end(rest)) is not None:
        segments.append(rest[:cut])
        rest = rest[cut:]
    assert len(segments) > 3 and "".join(segments) + rest == text
    for segment in segments:
        fences = sum(line.startswith("```") for line in segment.splitlines())
        assert fences % 2 == 0, "a code block was split"
        assert segment.endswith("\n\n") or segment.endswith("\n")
        assert segment.count("\n") >= SEGMENT_LINES


def test_replay_draws_kimicodes_own_notes_as_notes_and_strips_attached_files():
    from kimicode import prompts
    from kimicode.agent.mentions import HEADER
    from kimicode.tui.replay import history_widgets
    from kimicode.tui.widgets.chat import Notice, UserMessage

    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": prompts.render("compacted", summary="S", plan="", transcript="/t")},
        {"role": "user", "content": "look at @a.py" + HEADER + '<file path="a.py">\nsecret\n</file>'},
        {"role": "user", "content": prompts.render("tests_failed", command="pytest", summary="1 failed")},
    ]
    widgets = history_widgets(messages)
    assert [type(w) for w in widgets] == [Notice, UserMessage, Notice]
    assert widgets[1].prompt == "look at @a.py"
