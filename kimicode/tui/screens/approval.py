"""Asks the user whether a tool call may run: y once, a a always, n deny (with a note), Esc deny.

The modal can open while the user is typing their next prompt, so it takes no answer until
keys have paused for ARM_DELAY: type-ahead goes on into the prompt instead of answering."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from kimicode.events import Approval, ApprovalRequested, Decision

ARM_DELAY = 0.5  # s without a key press before the modal takes an answer
_ANSWER_KEYS = {"y", "a", "n"}


class ApprovalScreen(ModalScreen[Approval]):
    AUTO_FOCUS = ""  # nothing: answers are screen keys; the note field takes focus only after `n`
    BINDINGS = [
        Binding("y", "allow_once", "Allow once"),
        Binding("a", "allow_always", "Allow always"),
        Binding("n", "deny_with_note", "Deny"),
        Binding("escape", "deny", "Deny", priority=True),
    ]

    def __init__(self, request: ApprovalRequested, preview: str, lexer: str,
                 type_ahead: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.request = request
        self.preview = preview
        self.lexer = lexer
        self._type_ahead = type_ahead  # where keys typed before the modal is armed go
        self._armed_at = time.monotonic() + ARM_DELAY
        self._confirming_always = False
        self._always = ", ".join(request.rules) if request.rules else request.tool

    def compose(self) -> ComposeResult:
        with Vertical(id="approval"):
            yield Static(Text(self.request.title, style="bold"), id="approval-title")
            yield Static(Text(f"Needs approval: {self.request.reason}"), id="approval-reason")
            yield Static(self._keys(), id="approval-keys")
            yield Input(placeholder="Tell the model why, or what to do instead (Enter to send)", id="deny-note")
            if self.preview:
                from rich.syntax import Syntax

                with VerticalScroll(id="approval-preview"):
                    yield Static(Syntax(self.preview, self.lexer, theme="ansi_dark", background_color="default",
                                        word_wrap=True))

    def _keys(self) -> Text:
        keys = Text()
        if self._confirming_always:
            keys.append(" a ", style="bold reverse")
            keys.append(f" again: always allow {self._always} in this project; any other key goes back", style="bold")
            return keys
        for key, label in (("y", "allow once"), ("a", f"always allow {self._always}"), ("n", "deny with a note"),
                           ("esc", "deny")):
            keys.append(f" {key} ", style="bold reverse")
            keys.append(f" {label}   ")
        return keys

    def on_key(self, event: events.Key) -> None:
        if self.query_one("#deny-note", Input).has_focus:
            return  # typing the note
        now = time.monotonic()
        if now < self._armed_at:  # the user was typing when this opened: not an answer
            self._armed_at = now + ARM_DELAY
            if event.is_printable and event.character and self._type_ahead:
                self._type_ahead(event.character)
            event.stop()
            event.prevent_default()
        elif self._confirming_always and event.key != "a":
            self._confirming_always = False
            self.query_one("#approval-keys", Static).update(self._keys())
            event.stop()
            event.prevent_default()

    def action_allow_once(self) -> None:
        self.dismiss(Approval(Decision.ALLOW_ONCE))

    def action_allow_always(self) -> None:
        if not self._confirming_always:  # a lasting grant takes a second press
            self._confirming_always = True
            self.query_one("#approval-keys", Static).update(self._keys())
            return
        self.dismiss(Approval(Decision.ALLOW_ALWAYS))

    def action_deny(self) -> None:
        self.dismiss(Approval(Decision.DENY))

    def action_deny_with_note(self) -> None:
        note = self.query_one("#deny-note", Input)
        note.styles.display = "block"
        note.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(Approval(Decision.DENY, event.value.strip()))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # While typing a note, letters are text, not shortcuts.
        if action in ("allow_once", "allow_always", "deny_with_note") and self.query_one("#deny-note").has_focus:
            return False
        return True
