"""User flows through the interactive app: Textual's Pilot presses keys, the agent talks
to the fake OpenAI-compatible server over real HTTP, tools touch a real git repository."""

from __future__ import annotations

import pytest

from kimicode.agent.session import list_sessions
from kimicode.tui.screens.approval import ARM_DELAY, ApprovalScreen
from kimicode.tui.widgets.plan import PlanPanel
from tests.fakes.openai_server import Reply, ToolCall
from tests.processes import gone
from tests.tui.screen import screen_text, type_text, wait_for

SIZE = (110, 36)


async def send(pilot, text: str) -> None:
    await type_text(pilot, text)
    await pilot.press("enter")


async def ready(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.agent is not None and "⎇ main" in screen_text(pilot.app))


async def idle(pilot) -> None:
    await wait_for(pilot, lambda: not pilot.app.busy and not pilot.app.pending)
    await pilot.pause(0.1)


async def approval(pilot) -> ApprovalScreen:
    """The approval modal, once it takes answers (it ignores keys for ARM_DELAY after opening)."""
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ApprovalScreen))
    await pilot.pause(ARM_DELAY + 0.05)
    return pilot.app.screen


def tool_results(request: dict) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def edit_call(old="VALUE = 1", new="VALUE = 2"):
    return ToolCall("edit_file", {"path": "app.py", "old_string": old, "new_string": new})


def read_then_edit() -> list[Reply]:
    """The model reads first: edit_file refuses files it has not read."""
    return [Reply(tool_calls=[ToolCall("read_file", {"path": "app.py"})]), Reply(tool_calls=[edit_call()])]


async def test_a_streamed_answer_shows_markdown_folded_thinking_and_usage(make_app, fake_openai):
    fake_openai.script(Reply(reasoning="The user wants a number.\nI will say 42.",
                             text="The answer is **42**.\n\n```python\nprint(42)\n```\n", chunk_size=3))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "what is it")
        await idle(pilot)
        shown = screen_text(app)
        assert "❯ what is it" in shown
        assert "The answer is 42." in shown and "**" not in shown  # rendered, not raw Markdown
        assert "print(42)" in shown and "```" not in shown
        assert "Thought (2 lines)" in shown and "I will say 42." not in shown  # folded once the answer came
        assert "↑100 ↓20" in shown and "$0.0001" in shown
    assert fake_openai.requests[-1]["messages"][-1] == {"role": "user", "content": "what is it"}


async def test_approving_an_edit_shows_its_diff_first_then_applies_it(make_app, fake_openai, repo):
    fake_openai.script(*read_then_edit(), Reply(text="VALUE is now 2."))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "bump VALUE")
        modal = await approval(pilot)
        asked = screen_text(app)
        assert "Edit app.py" in asked and "-VALUE = 1" in asked and "+VALUE = 2" in asked
        assert (repo / "app.py").read_text() == "VALUE = 1\n"  # nothing happens before the answer
        assert modal.request.tool == "edit_file"
        await pilot.press("y")
        await idle(pilot)
        shown = screen_text(app)
        assert "✓ Edit app.py" in shown and "+VALUE = 2" in shown  # the diff stays open in the chat
        assert "VALUE is now 2." in shown
        assert "⎇ main*" in shown  # the status bar saw the work tree change
    assert (repo / "app.py").read_text() == "VALUE = 2\n"


async def test_denying_a_shell_command_sends_the_note_back_and_runs_nothing(make_app, fake_openai, repo):
    fake_openai.script(
        Reply(tool_calls=[ToolCall("shell", {"command": "touch made-by-shell"})]),
        Reply(text="Understood."),
    )
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "make a file")
        await approval(pilot)
        assert "touch made-by-shell" in screen_text(app)
        await pilot.press("n")
        await type_text(pilot, "use python instead")  # letters are text now, not shortcuts
        await pilot.press("enter")
        await idle(pilot)
        assert "✗" in screen_text(app)
    assert not (repo / "made-by-shell").exists()
    [result] = tool_results(fake_openai.requests[-1])
    assert "denied" in result and "use python instead" in result


async def test_escape_on_the_modal_denies(make_app, fake_openai, repo):
    fake_openai.script(Reply(tool_calls=[edit_call()]), Reply(text="ok"))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "bump")
        await approval(pilot)
        await pilot.press("escape")
        await idle(pilot)
    assert (repo / "app.py").read_text() == "VALUE = 1\n"
    assert "denied" in tool_results(fake_openai.requests[-1])[0]


async def test_allow_always_stops_asking_for_that_command(make_app, fake_openai, repo):
    fake_openai.script(
        Reply(tool_calls=[ToolCall("shell", {"command": "touch one"})]),
        Reply(text="first done"),
        Reply(tool_calls=[ToolCall("shell", {"command": "touch two"})]),
        Reply(text="second done"),
    )
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "first")
        modal = await approval(pilot)
        assert modal.request.rules == ("shell:touch",)
        assert "always allow shell:touch" in screen_text(app)
        await pilot.press("a")
        assert "again: always allow shell:touch in this project" in screen_text(app)
        await pilot.press("a")
        await idle(pilot)
        await send(pilot, "second")
        await idle(pilot)  # would hang on a modal if it asked again
        assert "second done" in screen_text(app)
    assert (repo / "one").exists() and (repo / "two").exists()


async def test_escape_interrupts_a_stalled_answer_and_the_app_stays_usable(make_app, fake_openai):
    fake_openai.script(Reply(text="Thinking about it", hang=True), Reply(text="Fresh answer."))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "slow question")
        await wait_for(pilot, lambda: "Thinking about it" in screen_text(app))
        await pilot.press("escape")
        await idle(pilot)
        assert "interrupted" in screen_text(app)
        await send(pilot, "again")
        await idle(pilot)
        assert "Fresh answer." in screen_text(app)
    # The interrupted turn left a valid history: the second request carries both prompts.
    contents = [m.get("content") for m in fake_openai.requests[-1]["messages"] if m["role"] == "user"]
    assert contents == ["slow question", "again"]


async def test_ctrl_c_kills_a_running_shell_command_and_a_second_ctrl_c_quits(make_app, fake_openai, repo):
    fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": "echo $$ > pid; echo started; sleep 60"})]))
    app = make_app(approval_mode="yolo")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "run it")
        await wait_for(pilot, lambda: (repo / "pid").exists() and "started" in screen_text(app))
        pid = int((repo / "pid").read_text())
        await pilot.press("ctrl+c")
        await idle(pilot)
        assert gone(pid)
        shown = screen_text(app)
        assert "interrupted" in shown and "Ctrl+C again to quit" in shown
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: app.return_code is not None)
    assert app.return_code == 0
    # The session was closed: another process may take it over.
    assert list_sessions(repo)[0].messages[-1]["role"] == "tool"


async def test_ctrl_c_first_clears_the_prompt_then_asks_before_quitting(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await type_text(pilot, "half a thought")
        await pilot.press("ctrl+c")
        assert app.prompt_input.text == ""
        assert app.return_code is None
        await pilot.press("ctrl+c")
        assert app.return_code is None  # the first press on an empty prompt only warns
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: app.return_code is not None)


async def test_mode_cycles_with_shift_tab_and_is_set_by_slash_mode(make_app, fake_openai, repo):
    fake_openai.script(*read_then_edit(), Reply(text="edited without asking"))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert " ask " in screen_text(app)
        await pilot.press("shift+tab")
        assert app.agent.policy.mode == "auto-edit" and " auto-edit " in screen_text(app)
        await send(pilot, "/mode plan")
        assert app.agent.policy.mode == "plan"
        await send(pilot, "/mode nonsense")
        assert "unknown mode 'nonsense'" in screen_text(app) and app.agent.policy.mode == "plan"
        await send(pilot, "/mode auto-edit")
        await send(pilot, "bump")
        await idle(pilot)  # auto-edit: no modal for an edit
        assert "edited without asking" in screen_text(app)
    assert (repo / "app.py").read_text() == "VALUE = 2\n"
    # The mode is part of the system prompt the model saw.
    assert "auto-edit" in fake_openai.requests[-1]["messages"][0]["content"]


async def test_plan_updates_show_in_the_side_panel(make_app, fake_openai):
    steps = [{"step": "Read the code", "status": "done"}, {"step": "Fix the bug", "status": "in_progress"},
             {"step": "Run the tests", "status": "pending"}]
    fake_openai.script(Reply(tool_calls=[ToolCall("update_plan", {"items": steps})]), Reply(text="planned"))
    app = make_app()
    async with app.run_test(size=(130, 36)) as pilot:
        await ready(pilot)
        panel = app.query_one(PlanPanel)
        assert not panel.display
        await send(pilot, "plan it")
        await idle(pilot)
        assert panel.display
        shown = screen_text(app)
        assert "Plan 1/3" in shown and "✓ Read the code" in shown and "▶ Fix the bug" in shown
        assert "○ Run the tests" in shown
        await pilot.press("ctrl+t")
        assert not panel.display


async def test_at_mentions_send_the_file_along_but_show_only_the_prompt(make_app, fake_openai):
    fake_openai.script(Reply(text="It sets VALUE."))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.prompt_input.insert("what does @app.py do")
        await pilot.press("enter")
        await idle(pilot)
        assert "<file" not in screen_text(app)
    sent = fake_openai.requests[-1]["messages"][-1]["content"]
    assert sent.startswith("what does @app.py do") and '<file path="app.py">\nVALUE = 1\n</file>' in sent


async def test_prompts_sent_during_a_turn_wait_their_turn(make_app, fake_openai):
    fake_openai.script(Reply(text="first answer", delay=0.05, chunk_size=2), Reply(text="second answer"))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "one")
        await send(pilot, "two")
        await idle(pilot)
        shown = screen_text(app)
        assert shown.index("first answer") < shown.index("❯ two") < shown.index("second answer")
    assert [m["content"] for m in fake_openai.requests[-1]["messages"] if m["role"] == "user"] == ["one", "two"]


async def test_undo_puts_files_and_conversation_back_and_diff_shows_the_changes(make_app, fake_openai, repo):
    fake_openai.script(*read_then_edit(), Reply(text="bumped"), Reply(text="after undo"))
    app = make_app(approval_mode="yolo")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "bump")
        await idle(pilot)
        await send(pilot, "/diff")
        await pilot.pause(0.3)
        shown = screen_text(app)
        assert "-VALUE = 1" in shown and "+VALUE = 2" in shown
        await send(pilot, "/undo")
        await wait_for(pilot, lambda: "undone:" in screen_text(app))
        assert (repo / "app.py").read_text() == "VALUE = 1\n"
        assert [m["role"] for m in app.agent.messages] == ["system"]
        assert "❯ bump" not in screen_text(app)
        await send(pilot, "/undo")
        await wait_for(pilot, lambda: "nothing to undo" in screen_text(app))
        await send(pilot, "hello")
        await idle(pilot)
    # The model no longer sees the undone turn.
    assert [m["content"] for m in fake_openai.requests[-1]["messages"] if m["role"] == "user"] == ["hello"]


async def test_clear_starts_a_new_session_and_resume_brings_the_old_one_back(make_app, fake_openai):
    fake_openai.script(Reply(text="answer one"), Reply(text="answer two"))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "first session prompt")
        await idle(pilot)
        first = app.agent.session.id
        await send(pilot, "/clear")
        await wait_for(pilot, lambda: app.agent is not None and app.agent.session.id != first)
        assert "first session prompt" not in screen_text(app)
        await send(pilot, "/sessions")
        await pilot.pause(0.2)
        assert first in screen_text(app)
        await send(pilot, f"/resume {first}")
        await wait_for(pilot, lambda: app.agent is not None and app.agent.session.id == first)
        shown = screen_text(app)
        assert "❯ first session prompt" in shown and "answer one" in shown
        await send(pilot, "more")
        await idle(pilot)
    users = [m["content"] for m in fake_openai.requests[-1]["messages"] if m["role"] == "user"]
    assert users == ["first session prompt", "more"]


async def test_continue_draws_the_previous_conversation(make_app, fake_openai):
    fake_openai.script(Reply(tool_calls=[ToolCall("read_file", {"path": "app.py"})]), Reply(text="It is one."))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "what is VALUE")
        await idle(pilot)
        await type_text(pilot, "ab")
        await pilot.press("left", "ctrl+d")  # with text, Ctrl+D deletes to the right
        assert app.prompt_input.text == "a" and app.return_code is None
        await pilot.press("backspace", "ctrl+d")  # on an empty prompt it quits
        await wait_for(pilot, lambda: app.return_code == 0)
    app = make_app(resume="latest")
    async with app.run_test(size=SIZE) as pilot:
        # The whole conversation, drawn as it was (waited for as one: mounting may take frames).
        expected = ("❯ what is VALUE", "✓ read_file app.py", "It is one.")
        await wait_for(pilot, lambda: all(part in screen_text(app) for part in expected))
        assert app.agent is not None and [m["role"] for m in app.agent.messages][-2:] == ["tool", "assistant"]


async def test_model_switch_applies_to_the_next_request(make_app, fake_openai):
    fake_openai.script(Reply(text="from turbo"))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "/model kimi-k2-turbo-preview")
        await wait_for(pilot, lambda: "kimi-k2-turbo-preview ·" in screen_text(app))
        await send(pilot, "hi")
        await idle(pilot)
    assert fake_openai.requests[-1]["model"] == "kimi-k2-turbo-preview"


async def test_help_cost_and_unknown_commands(make_app, fake_openai):
    fake_openai.script(Reply(text="hi", usage=(1000, 50, 800)))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "/help")
        await pilot.pause(0.1)
        shown = screen_text(app)
        assert "/undo" in shown and "/resume ID" in shown and "Shift+Tab" in shown
        await send(pilot, "/frobnicate")
        assert "unknown command /frobnicate" in screen_text(app)
        await send(pilot, "hello")
        await idle(pilot)
        await send(pilot, "/cost")
        assert "1,000 tokens in (80% from cache), 50 out, 1 model calls" in screen_text(app)
        assert "cache 80%" in screen_text(app)
    assert len(fake_openai.requests) == 1  # slash commands never reach the model


async def test_a_backend_failure_is_shown_and_the_next_prompt_works(make_app, fake_openai):
    from tests.fakes.openai_server import Fault

    fake_openai.script(Fault(401, body={"error": {"message": "invalid api key"}}), Reply(text="recovered"))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "first")
        await idle(pilot)
        assert "invalid api key" in screen_text(app)
        await send(pilot, "second")
        await idle(pilot)
        assert "recovered" in screen_text(app)


async def test_the_theme_comes_from_the_config_and_a_wrong_one_is_named(make_app, repo):
    (repo / ".kimicode" / "config.toml").write_text('theme = "textual-light"\nauto_test = false\n')
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.theme == "textual-light"
    (repo / ".kimicode" / "config.toml").write_text('theme = "neon-pink"\n')
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert "unknown theme 'neon-pink'" in screen_text(app) and app.theme == "textual-dark"


async def test_tool_rows_fold_with_the_keyboard_and_typing_returns_to_the_prompt(make_app, fake_openai):
    from kimicode.tui.widgets.tool_call import ToolCallRow

    fake_openai.script(Reply(tool_calls=[ToolCall("read_file", {"path": "app.py"})]), Reply(text="read it"))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "look")
        await idle(pilot)
        row = app.query_one(ToolCallRow)
        assert row.collapsed and "VALUE = 1" not in screen_text(app)
        await pilot.press("tab")
        assert not app.prompt_input.has_focus
        await pilot.press("enter")
        assert not row.collapsed and "VALUE = 1" in screen_text(app)
        await type_text(pilot, "next")
        assert app.prompt_input.has_focus and app.prompt_input.text == "next"


async def test_first_run_setup_saves_the_key_and_connects(repo, tmp_path):
    from kimicode.config import user_config_path
    from kimicode.tui.app import KimicodeApp
    from kimicode.tui.history import PromptHistory
    from kimicode.tui.screens.setup import SetupScreen

    secret = "sk-first-run-0123456789"
    app = KimicodeApp(repo, {"repo_map": False}, history=PromptHistory(tmp_path / "h.jsonl"))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, SetupScreen) and "no API key for moonshot" in screen_text(app))
        first = app.focused
        await pilot.press("shift+tab")  # moves focus on this screen; it does not cycle modes
        assert app.status.info.mode == "ask" and app.focused is not first
        await pilot.press("tab", "tab")
        assert app.focused.id == "moonshot-key"
        await type_text(pilot, secret)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.agent is not None)
        shown = screen_text(app)
        assert "kimi-k2-0905-preview · moonshot" in shown and secret not in shown
    assert secret in user_config_path().read_text()
    assert user_config_path().stat().st_mode & 0o777 == 0o600


async def test_leaving_first_run_setup_exits_with_a_hint(repo, tmp_path):
    from kimicode.tui.app import KimicodeApp
    from kimicode.tui.history import PromptHistory
    from kimicode.tui.screens.setup import SetupScreen

    app = KimicodeApp(repo, {"repo_map": False}, history=PromptHistory(tmp_path / "h.jsonl"))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, SetupScreen))
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: app.return_code is not None)
    assert app.return_code == 2


async def test_compact_summarises_older_turns_and_init_runs_a_turn(make_app, fake_openai):
    fake_openai.script(Reply(text="first answer"), Reply(text="second answer"),
                       Reply(text="Summary: the user asked twice; nothing was changed."),
                       Reply(tool_calls=[ToolCall("write_file", {"path": "AGENTS.md", "content": "# Notes\n"})]),
                       Reply(text="Wrote AGENTS.md."))
    app = make_app(approval_mode="auto-edit")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        for prompt in ("one", "two"):
            await send(pilot, prompt)
            await idle(pilot)
        await send(pilot, "/compact")
        await wait_for(pilot, lambda: "compacted:" in screen_text(app))
        contents = " ".join(str(m.get("content")) for m in app.agent.messages)
        assert "Summary: the user asked twice" in contents and "first answer" not in contents
        assert app.agent.messages[-1]["content"] == "second answer"
        await send(pilot, "/init")
        await idle(pilot)
        assert "Wrote AGENTS.md." in screen_text(app)
    assert "AGENTS.md" in fake_openai.requests[-2]["messages"][-1]["content"]  # the /init prompt


async def test_keys_typed_as_the_modal_opens_go_to_the_prompt_not_to_the_modal(make_app, fake_openai, repo):
    from kimicode.approval import RuleStore
    from kimicode.paths import project_grants_path

    fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": "touch made"})]), Reply(text="ok"))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "go")
        await wait_for(pilot, lambda: isinstance(app.screen, ApprovalScreen))
        await type_text(pilot, "and yes also")  # the user was still typing their next prompt
        assert isinstance(app.screen, ApprovalScreen) and not (repo / "made").exists()
        assert app.prompt_input.text == "and yes also"  # nothing typed was lost
        await pilot.pause(ARM_DELAY + 0.05)
        await pilot.press("a", "x")  # a lasting grant needs a second `a`; another key backs out
        assert isinstance(app.screen, ApprovalScreen)
        await pilot.press("n")
        await type_text(pilot, "not now")
        await pilot.press("enter")
        await idle(pilot)
    assert not (repo / "made").exists()
    assert RuleStore(project_grants_path(repo)).load() == []


async def test_a_long_diff_keeps_the_modal_keys_visible_at_80x24(make_app, fake_openai, repo):
    body = "".join(f"line {i}\n" for i in range(60))
    fake_openai.script(Reply(tool_calls=[ToolCall("write_file", {"path": "long.txt", "content": body})]),
                       Reply(text="ok"))
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "write it")
        await approval(pilot)
        shown = screen_text(app)
        assert "allow once" in shown and "deny with a note" in shown and "+line 0" in shown


async def test_mode_survives_clear_and_escape_cancels_a_slow_compact(make_app, fake_openai):
    fake_openai.script(Reply(text="one"), Reply(text="two"), Reply(text="never used", hang=True))
    app = make_app(approval_mode="yolo")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "/mode ask")
        await send(pilot, "/clear")
        await wait_for(pilot, lambda: "new session" in screen_text(app))
        assert app.agent.policy.mode == "ask" and " ask " in screen_text(app)
        for prompt in ("a", "b"):
            await send(pilot, prompt)
            await idle(pilot)
        before = list(app.agent.messages)
        await send(pilot, "/compact")
        await wait_for(pilot, lambda: "compacting" in screen_text(app))
        await type_text(pilot, "typed meanwhile")  # keys keep working during the command
        assert app.prompt_input.text == "typed meanwhile"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.busy and "cancelled" in screen_text(app))
        assert app.agent.messages == before


async def test_bad_resume_ids_page_keys_and_tab_order(make_app, fake_openai):
    from textual.widgets._collapsible import CollapsibleTitle

    fake_openai.script(*(Reply(tool_calls=[ToolCall("read_file", {"path": "app.py"})]) for _ in range(30)),
                       Reply(text="done reading"))
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        for bad in ("/tmp/x", "a**"):
            await send(pilot, f"/resume {bad}")
            await wait_for(pilot, lambda: "not a session id" in screen_text(app))
        await send(pilot, "read a lot")
        await idle(pilot)
        chat = app.chat
        bottom = chat.scroll_y
        assert bottom > 0
        await pilot.press("pageup")
        await wait_for(pilot, lambda: chat.scroll_y < bottom)  # the prompt has focus, the chat scrolls
        await pilot.press("pagedown")
        await pilot.press("tab")
        rows = list(chat.query(CollapsibleTitle))
        assert app.focused is rows[-1]  # the newest row first
        await pilot.press("tab")
        assert app.focused is rows[-2]


async def test_mcp_servers_from_the_user_config_serve_the_app_and_broken_ones_are_named(make_app, fake_openai, isolated_home):
    import json as _json
    import sys

    from tests.mcp_tools.test_hub import ECHO_SERVER

    config = isolated_home / "config" / "kimicode" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[mcp_servers.echo]\ncommand = {_json.dumps(sys.executable)}\nargs = [{_json.dumps(ECHO_SERVER)}]\n'
                      '[mcp_servers.broken]\ncommand = "no-such-mcp-server-command"\n')
    fake_openai.script(Reply(tool_calls=[ToolCall("echo__echo", {"text": "from the app"})]), Reply(text="echoed"))
    app = make_app(approval_mode="yolo")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert "MCP server broken" in screen_text(app)
        await send(pilot, "echo")
        await idle(pilot)
        await send(pilot, "/clear")  # a new session reuses the running servers
        await wait_for(pilot, lambda: "new session" in screen_text(app))
        assert app._mcp.tools and [t.name for t in app._mcp.tools if t.name == "echo__echo"]
    assert "from the app" in [m["content"] for m in fake_openai.requests[-1]["messages"] if m["role"] == "tool"][0]


async def test_a_turn_on_the_local_engine_and_model_switching_refused(make_app, tmp_path_factory):
    """The app on `--backend local` (a tiny random checkpoint): a turn streams and finishes
    with usage; /model does not load a second copy of the model."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.backends.k2.checkpoints import write_tiny_k2

    checkpoint = write_tiny_k2(tmp_path_factory.mktemp("models") / "tiny-k2")
    app = make_app(backend="local", model_path=str(checkpoint), local={"device": "cpu", "max_output": 12, "seed": 3})
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.agent is not None and app.agent.backend.info.name == "tiny-k2"
        await send(pilot, "hi")
        await idle(pilot)
        assert app.agent.messages[-1]["role"] == "assistant"
        await send(pilot, "/model other")
        await wait_for(pilot, lambda: "restart with another --model-path" in screen_text(app))
        assert app.agent.backend.info.name == "tiny-k2"
