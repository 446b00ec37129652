"""Snapshots of the main screens (SVGs in __snapshots__/; `pytest --snapshot-update` after a deliberate change)."""

from __future__ import annotations

import pytest

from tests.fakes.openai_server import Reply, ToolCall
from tests.tui.screen import type_text, wait_for
from tests.tui.test_app import approval, idle, ready, send

PLAN = [{"step": "Read app.py", "status": "done"}, {"step": "Bump VALUE", "status": "in_progress"},
        {"step": "Run the tests", "status": "pending"}]


def conversation():
    return [
        Reply(reasoning="The user wants VALUE bumped.\nRead the file first.",
              tool_calls=[ToolCall("update_plan", {"items": PLAN}), ToolCall("read_file", {"path": "app.py"})]),
        Reply(text="I will change the constant.",
              tool_calls=[ToolCall("edit_file", {"path": "app.py", "old_string": "VALUE = 1", "new_string": "VALUE = 2"})]),
        Reply(tool_calls=[ToolCall("shell", {"command": "python -c 'import app; print(app.VALUE)'"})]),
        Reply(text="Done: `VALUE` is now **2**.\n\n```python\nVALUE = 2\n```\n\n- checked with Python\n- no tests yet",
              usage=(2400, 120, 1800)),
    ]


async def steady_ready(pilot) -> None:
    """Connected, with the prompt's cursor not blinking (a blink would make the snapshot timing-dependent)."""
    pilot.app.prompt_input.cursor_blink = False
    await ready(pilot)


async def converse(pilot) -> None:
    await steady_ready(pilot)
    await send(pilot, "bump VALUE")
    await idle(pilot)
    await wait_for(pilot, lambda: pilot.app.status.info.dirty)


@pytest.mark.parametrize("size", [(120, 36), (80, 24)], ids=["120x36", "80x24"])
def test_main_screen_after_a_conversation(snap_compare, make_app, fake_openai, size):
    fake_openai.script(*conversation())
    assert snap_compare(make_app(approval_mode="yolo"), terminal_size=size, run_before=converse)


def test_main_screen_light_theme(snap_compare, make_app, fake_openai):
    fake_openai.script(*conversation())
    app = make_app(approval_mode="yolo")

    async def light(pilot):
        app.theme = "textual-light"
        await converse(pilot)

    assert snap_compare(app, terminal_size=(120, 36), run_before=light)


def test_approval_modal_for_a_shell_command(snap_compare, make_app, fake_openai):
    fake_openai.script(Reply(text="Running the build.", tool_calls=[ToolCall("shell", {"command": "make build && rm -rf dist/tmp"})]))

    async def ask(pilot):
        await steady_ready(pilot)
        await send(pilot, "build it")
        await approval(pilot)
        await pilot.pause(0.2)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=ask)


def test_help_and_completion_menu(snap_compare, make_app):
    async def help_then_complete(pilot):
        await steady_ready(pilot)
        await send(pilot, "/help")
        await type_text(pilot, "/u")
        await pilot.pause(0.2)

    assert snap_compare(make_app(), terminal_size=(100, 36), run_before=help_then_complete)
