"""PromptInput driven through a real Textual Pilot: sending, newlines, history, completion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Static

import kimicode.tui
from kimicode.tui.history import PromptHistory
from kimicode.tui.widgets.prompt import PromptInput

PROMPT_TCSS = Path(kimicode.tui.__file__).parent / "styles" / "prompt.tcss"


class Harness(App):
    """A conversation area above a prompt, as in the real app; Esc means "interrupt"."""

    CSS_PATH = PROMPT_TCSS
    CSS = "#log { height: 1fr; } #bottom { height: auto; }"
    BINDINGS = [Binding("escape", "interrupt")]

    def __init__(self, history: PromptHistory, root: Path):
        super().__init__()
        self._history = history
        self._root = root
        self.submitted: list[str] = []
        self.interrupts = 0

    def compose(self) -> ComposeResult:
        yield Static("conversation", id="log")
        with Vertical(id="bottom"):
            yield PromptInput(self._history, self._root, id="prompt")

    def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        self.submitted.append(message.text)

    def action_interrupt(self) -> None:
        self.interrupts += 1


@pytest.fixture
def workspace(tmp_path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    for name in ["src/main.py", "src/util.py", "README.md", "secret_main.env"]:
        (root / name).write_text("")
    (root / ".gitignore").write_text("*.env\n")
    return root


@pytest.fixture
def history_path(tmp_path) -> Path:
    return tmp_path / "history.jsonl"


def harness(history_path: Path, workspace: Path) -> Harness:
    return Harness(PromptHistory(history_path), workspace)


async def type_text(pilot, text: str) -> None:
    await pilot.press(*text)


async def files_listed(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def test_enter_submits_clears_and_records_history(history_path, workspace):
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.query_one(PromptInput)
        await type_text(pilot, "hello there")
        await pilot.press("enter")
        await pilot.pause()

        assert app.submitted == ["hello there"]
        assert prompt.text == ""
    assert PromptHistory(history_path).entries == ("hello there",)


async def test_blank_input_does_not_submit(history_path, workspace):
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")
        await type_text(pilot, "   ")
        await pilot.press("ctrl+j", "enter")
        await pilot.pause()

        assert app.submitted == []
        assert app.query_one(PromptInput).text == "   \n"  # left for the user to fix
    assert not history_path.exists()


async def test_newline_keys_insert_newlines_and_multiline_text_submits_intact(history_path, workspace):
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.query_one(PromptInput)
        await type_text(pilot, "one")
        await pilot.press("ctrl+j")
        await type_text(pilot, "two")
        await pilot.press("shift+enter")
        await type_text(pilot, "three")
        await pilot.press("alt+enter")
        await type_text(pilot, "four")
        assert prompt.text == "one\ntwo\nthree\nfour"
        assert app.submitted == []

        await pilot.press("enter")
        await pilot.pause()
        assert app.submitted == ["one\ntwo\nthree\nfour"]
    assert PromptHistory(history_path).entries == ("one\ntwo\nthree\nfour",)


async def test_backslash_enter_continues_the_line(history_path, workspace):
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.query_one(PromptInput)
        await type_text(pilot, "first \\")
        await pilot.press("enter")
        assert prompt.text == "first \n"  # the backslash became the newline
        await type_text(pilot, "second")
        await pilot.press("enter")
        await pilot.pause()
        assert app.submitted == ["first \nsecond"]

        # a backslash that is not at the end of the line is just text
        await type_text(pilot, "a\\b")
        await pilot.press("enter")
        await pilot.pause()
        assert app.submitted[-1] == "a\\b"


async def test_height_grows_with_content_then_stops(history_path, workspace):
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.query_one(PromptInput)
        one_line = prompt.outer_size.height
        await type_text(pilot, "a")
        for _ in range(3):
            await pilot.press("ctrl+j", "x")
        await pilot.pause()
        four_lines = prompt.outer_size.height
        for _ in range(20):
            await pilot.press("ctrl+j", "y")
        await pilot.pause()

        assert one_line == 3  # one text line inside the border
        assert four_lines == one_line + 3
        assert prompt.outer_size.height == 10  # capped; the rest scrolls
        assert prompt.cursor_location == (23, 1)


async def test_history_up_down_restores_the_draft(history_path, workspace):
    history_path.write_text(json.dumps("older") + "\n" + json.dumps("newer\nsecond line") + "\n")
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.query_one(PromptInput)
        await type_text(pilot, "my draft")

        await pilot.press("up")
        assert prompt.text == "newer\nsecond line"
        assert prompt.cursor_location[0] == 0  # still on the first line: Up goes on back
        await pilot.press("up")
        assert prompt.text == "older"
        await pilot.press("up")
        assert prompt.text == "older"  # nothing older

        await pilot.press("down")
        assert prompt.text == "newer\nsecond line"
        assert prompt.cursor_location == (1, len("second line"))  # on the last line: Down goes on
        await pilot.press("down")
        assert prompt.text == "my draft"

        # a recalled entry submits like typed text
        await pilot.press("up", "enter")
        await pilot.pause()
        assert app.submitted == ["newer\nsecond line"]


async def test_up_inside_multiline_text_moves_the_cursor_not_the_history(history_path, workspace):
    history_path.write_text(json.dumps("old") + "\n")
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.query_one(PromptInput)
        await type_text(pilot, "a")
        await pilot.press("ctrl+j", "b", "up")
        assert prompt.text == "a\nb"
        assert prompt.cursor_location[0] == 0
        await pilot.press("up")
        assert prompt.text == "old"


async def test_history_persists_across_instances_and_skips_a_torn_line(history_path, workspace):
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await type_text(pilot, "from the first session")
        await pilot.press("enter")
    with history_path.open("a") as file:
        file.write('"torn wri')  # a writer killed mid-line

    second = harness(history_path, workspace)
    async with second.run_test(size=(80, 24)) as pilot:
        prompt = second.query_one(PromptInput)
        await pilot.press("up")
        assert prompt.text == "from the first session"
        await pilot.press("down")
        await type_text(pilot, "from the second")
        await pilot.press("enter")

    assert PromptHistory(history_path).entries == ("from the first session", "from the second")


async def test_at_completion_lists_workspace_files_and_tab_accepts(history_path, workspace):
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.query_one(PromptInput)
        await type_text(pilot, "look at @")
        await files_listed(pilot)

        assert prompt.menu_open
        everything = [item.insert.strip() for item in prompt.menu.items]
        assert sorted(everything) == [".gitignore", "README.md", "src/main.py", "src/util.py"]

        await type_text(pilot, "main")
        assert [item.insert for item in prompt.menu.items] == ["src/main.py "]  # secret_main.env is ignored

        await pilot.press("tab")
        assert prompt.text == "look at @src/main.py "
        assert not prompt.menu_open
        assert prompt.has_focus  # Tab went to the menu, not to focus_next
        assert app.submitted == []


async def test_enter_and_arrows_work_inside_the_file_menu(history_path, workspace):
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.query_one(PromptInput)
        await type_text(pilot, "@src/")
        await files_listed(pilot)
        assert [item.insert for item in prompt.menu.items] == ["src/main.py ", "src/util.py "]

        await pilot.press("down", "enter")
        assert prompt.text == "@src/util.py "
        assert app.submitted == []  # Enter accepted the file, it did not send


async def test_menu_sits_above_the_prompt_without_covering_it(history_path, workspace):
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.query_one(PromptInput)
        await type_text(pilot, "/")
        await pilot.pause()

        menu = prompt.menu
        assert prompt.menu_open
        assert menu.region.height == 10  # at most ten rows of the 13 commands
        assert menu.region.bottom <= prompt.region.y
        assert prompt.region.bottom <= 24 and menu.region.y >= 0


async def test_slash_completes_a_command(history_path, workspace):
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.query_one(PromptInput)
        await type_text(pilot, "/mo")
        assert [item.insert for item in prompt.menu.items] == ["/model ", "/mode "]

        await pilot.press("tab")
        assert prompt.text == "/model "
        assert not prompt.menu_open

        # a space ends the command word: no menu for the argument
        await type_text(pilot, "k")
        assert not prompt.menu_open


async def test_enter_on_a_command_without_arguments_runs_it(history_path, workspace):
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.query_one(PromptInput)
        await type_text(pilot, "/he")
        await pilot.press("enter")
        await pilot.pause()
        assert app.submitted == ["/help"]

        await type_text(pilot, "/mo")
        await pilot.press("enter")
        await pilot.pause()
        assert prompt.text == "/model "  # takes an argument: wait for it
        assert app.submitted == ["/help"]


async def test_escape_closes_the_menu_without_interrupting(history_path, workspace):
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.query_one(PromptInput)
        await type_text(pilot, "/mo")
        assert prompt.menu_open

        await pilot.press("escape")
        assert not prompt.menu_open
        assert app.interrupts == 0
        assert prompt.text == "/mo"

        await pilot.press("escape")  # menu closed: the app's binding gets it
        assert app.interrupts == 1


async def test_refresh_files_picks_up_new_files(history_path, workspace):
    app = harness(history_path, workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.query_one(PromptInput)
        await type_text(pilot, "@brand")
        await files_listed(pilot)
        assert not prompt.menu_open  # no match yet

        (workspace / "brand_new.py").write_text("")
        await type_text(pilot, "_")  # the cached list is used: still nothing
        assert not prompt.menu_open

        prompt.refresh_files()
        await files_listed(pilot)
        assert [item.insert for item in prompt.menu.items] == ["brand_new.py "]
