"""The prompt: a multi-line input with history recall and an @file / /command menu.

Keys: Enter sends; Ctrl+J, Shift+Enter, Alt+Enter or a trailing backslash + Enter
start a new line; Up on the first line / Down on the last walk the history. While
the completion menu is open, Up/Down move in it, Tab/Enter accept and Esc closes it
(Esc is consumed then, so the app's "interrupt" binding only sees it when closed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from textual import events
from textual.content import Content
from textual.message import Message
from textual.widgets import OptionList, TextArea
from textual.widgets.option_list import Option
from textual.widgets.text_area import Edit, EditResult, Location

from kimicode.tui.commands import SlashCommand
from kimicode.tui.completion import (
    at_token,
    command_label,
    list_workspace_files,
    match_commands,
    rank_paths,
    slash_query,
)
from kimicode.tui.history import PromptHistory

PLACEHOLDER = "Ask kimicode… (Enter to send, Ctrl+J newline, / for commands, @ for files)"
# Shift+Enter and Alt+Enter only arrive where the terminal reports them (kitty protocol);
# Ctrl+J is a plain "\n" byte everywhere.
NEWLINE_KEYS = frozenset({"ctrl+j", "shift+enter", "alt+enter"})
_MENU_KEYS = frozenset({"up", "down", "tab", "enter", "escape"})


@dataclass(frozen=True)
class CompletionItem:
    insert: str  # replaces the token being completed
    label: Content
    submit_on_enter: bool = False  # a command that takes no argument runs straight away


class CompletionMenu(OptionList, can_focus=False):
    """The candidates for the token at the prompt's cursor; never takes focus, the
    prompt drives it."""

    def __init__(self, on_pick: Callable[[int], None]):
        super().__init__(markup=False)
        self._on_pick = on_pick
        self.items: list[CompletionItem] = []
        self.display = False  # closed even if the app forgot to load prompt.tcss

    def show_items(self, items: list[CompletionItem]) -> None:
        self.items = items
        self.set_options(Option(item.label) for item in items)
        self.highlighted = 0
        self.display = True

    def hide(self) -> None:
        if self.display:
            self.display = False
            self.items = []
            self.clear_options()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()  # a mouse click: same as Tab on that item
        self._on_pick(event.option_index)


class PromptInput(TextArea):
    @dataclass
    class Submitted(Message):
        """The user sent `text` (trailing whitespace removed); the prompt is already cleared."""

        text: str
        prompt_input: PromptInput | None = field(default=None, compare=False, repr=False)

        @property
        def control(self) -> PromptInput | None:
            return self.prompt_input

    def __init__(
        self,
        history: PromptHistory,
        workspace_root: Path,
        id: str | None = None,
        *,
        placeholder: str = PLACEHOLDER,
        name: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ):
        super().__init__(
            "",
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            placeholder=placeholder,
            highlight_cursor_line=False,
            id=id,
            name=name,
            classes=classes,
            disabled=disabled,
        )
        self.prompt_history = history
        self.workspace_root = Path(workspace_root)
        self.menu = CompletionMenu(on_pick=self._accept)
        self._span: tuple[Location, Location] = ((0, 0), (0, 0))  # what accepting replaces
        self._history_index: int | None = None  # None: editing the draft, not browsing
        self._draft = ""
        self._files: list[str] | None = None  # None: not listed yet
        self._files_loading = False
        self._completion_key: tuple[str, Location] | None = None

    @property
    def menu_open(self) -> bool:
        return bool(self.menu.display)

    def on_mount(self) -> None:
        # A sibling just above the prompt, in the layout flow: it pushes the conversation
        # up instead of covering the input. An app wanting it elsewhere yields
        # `prompt.menu` itself in compose, before the prompt.
        if self.menu.parent is None and self.parent is not None:
            self.parent.mount(self.menu, before=self)

    def on_unmount(self) -> None:
        if self.menu.is_attached:
            self.menu.remove()

    def on_blur(self) -> None:
        self.close_menu()

    def close_menu(self) -> None:
        self.menu.hide()
        self._completion_key = None

    # --- keys ------------------------------------------------------------------------

    async def _on_key(self, event: events.Key) -> None:
        # Runs before TextArea._on_key; prevent_default skips TextArea's handler, stop()
        # keeps the key from bubbling on to the app's bindings.
        if self.read_only:
            return
        key = event.key
        if self.menu_open and key in _MENU_KEYS:
            event.stop()
            event.prevent_default()
            if key == "up":
                self.menu.action_cursor_up()
            elif key == "down":
                self.menu.action_cursor_down()
            elif key == "escape":
                self.close_menu()
            else:
                self._accept(self.menu.highlighted, enter=key == "enter")
        elif key == "enter":
            event.stop()
            event.prevent_default()
            if self._ends_with_continuation():
                row, column = self.cursor_location
                self.replace("\n", (row, column - 1), (row, column), maintain_selection_offset=False)
            else:
                self.submit()
        elif key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.replace("\n", *self.selection, maintain_selection_offset=False)

    def _ends_with_continuation(self) -> bool:
        """A backslash ending the line at the cursor: the newline that works on any terminal."""
        row, column = self.cursor_location
        line = self.document[row]
        return self.selection.is_empty and column == len(line) and line.endswith("\\")

    def submit(self) -> None:
        """Send the prompt, as Enter does; blank input is not sent."""
        text = self.text.rstrip()
        if not text.strip():
            return
        self.prompt_history.add(text)
        self._set_text("")
        self.post_message(self.Submitted(text, prompt_input=self))

    # --- history ---------------------------------------------------------------------

    def action_cursor_up(self, select: bool = False) -> None:
        if select or self.menu_open or not self.navigator.is_first_wrapped_line(self.cursor_location):
            super().action_cursor_up(select)
        elif not self._recall(-1):
            super().action_cursor_up(select)

    def action_cursor_down(self, select: bool = False) -> None:
        if select or self.menu_open or not self.navigator.is_last_wrapped_line(self.cursor_location):
            super().action_cursor_down(select)
        elif not self._recall(+1):
            super().action_cursor_down(select)

    def _recall(self, step: int) -> bool:
        """Show the previous (-1) or next (+1) history entry; past the newest, the draft."""
        entries = self.prompt_history.entries
        if self.read_only:
            return False
        if self._history_index is None:
            if step > 0 or not entries:
                return False
            self._draft = self.text
            index = len(entries) - 1
        else:
            index = max(0, self._history_index + step)
        if index >= len(entries):
            self._set_text(self._draft)
            return True
        self._set_text(entries[index], at_first_line=step < 0)
        self._history_index = index
        return True

    def _set_text(self, text: str, *, at_first_line: bool = False) -> None:
        """Replace the whole input without opening the menu; ends any history browsing."""
        self.load_text(text)
        self.close_menu()
        self._history_index = None
        # Going back, the cursor stays on the first line so Up keeps walking the history;
        # going forward it ends on the last line, so Down does.
        self.move_cursor((0, len(self.document[0])) if at_first_line else self.document.end)

    # --- completion ------------------------------------------------------------------

    def edit(self, edit: Edit) -> EditResult:
        # Every keyboard edit passes here, in key order: the menu is current before the
        # next key (a quick Tab after "@ma" sees it), unlike with queued Changed messages.
        result = super().edit(edit)
        self._refresh_completion()
        return result

    def on_text_area_selection_changed(self, event: TextArea.SelectionChanged) -> None:
        if self.menu_open:  # moving the cursor may leave the token: re-check, never open
            self._refresh_completion()

    def refresh_files(self) -> None:
        """Forget the cached file list; it is listed again (off the UI thread) when next needed."""
        self._files = None
        self._files_loading = False
        self._completion_key = None
        if self.menu_open or self._at_token() is not None:
            self._load_files()

    def _at_token(self) -> tuple[int, str] | None:
        row, column = self.cursor_location
        return at_token(self.document[row][:column])

    def _refresh_completion(self) -> None:
        key = (self.text, self.cursor_location)
        if key == self._completion_key:
            return
        self._completion_key = key
        items = self._candidates() if self.selection.is_empty else []
        if items:
            self.menu.show_items(items)
        else:
            self.menu.hide()

    def _candidates(self) -> list[CompletionItem]:
        """Items for the token at the cursor (and set the span they replace)."""
        row, column = self.cursor_location
        text = self.text
        query = slash_query(text)
        if query is not None:
            self._span = ((0, 0), (0, len(text)))
            return [
                CompletionItem(f"/{c.name} ", _command_content(c), submit_on_enter=not c.usage)
                for c in match_commands(query)
            ]
        token = self._at_token()
        if token is None:
            return []
        if self._files is None:
            self._load_files()
            return []
        start, query = token
        line = self.document[row]
        end = column
        while end < len(line) and not line[end].isspace():  # the rest of the token after the cursor
            end += 1
        self._span = ((row, start), (row, end))
        return [CompletionItem(f"{path} ", Content(path)) for path in rank_paths(query, self._files)]

    def _load_files(self) -> None:
        if self._files_loading:
            return
        self._files_loading = True
        self.run_worker(self._list_files(), group="prompt-files", exclusive=True, exit_on_error=False)

    async def _list_files(self) -> None:
        try:
            files = await asyncio.to_thread(list_workspace_files, self.workspace_root)
        except Exception:  # completion is a convenience; an odd tree must not crash the app
            files = []
        self._files = files
        self._files_loading = False
        self._completion_key = None
        if self.has_focus:
            self._refresh_completion()

    def _accept(self, index: int | None, *, enter: bool = False) -> None:
        if index is None or not 0 <= index < len(self.menu.items):
            self.close_menu()
            return
        item = self.menu.items[index]
        start, end = self._span
        self.close_menu()
        self.replace(item.insert, start, end, maintain_selection_offset=False)
        if enter and item.submit_on_enter:
            self.submit()


def _command_content(command: SlashCommand) -> Content:
    name, _, rest = command_label(command).partition(" — ")
    return Content.assemble((name, "bold"), (f" — {rest}", "dim"))
