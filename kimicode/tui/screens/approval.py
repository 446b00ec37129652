"""Asks the user whether a tool call may run: y once, a always, n deny (with a note), Esc deny."""

from __future__ import annotations

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from kimicode.events import Approval, ApprovalRequested, Decision


class ApprovalScreen(ModalScreen[Approval]):
    BINDINGS = [
        Binding("y", "allow_once", "Allow once"),
        Binding("a", "allow_always", "Allow always"),
        Binding("n", "deny_with_note", "Deny"),
        Binding("escape", "deny", "Deny", priority=True),
    ]

    def __init__(self, request: ApprovalRequested, preview: str, lexer: str) -> None:
        super().__init__()
        self.request = request
        self.preview = preview
        self.lexer = lexer

    def compose(self) -> ComposeResult:
        request = self.request
        always = ", ".join(request.rules) if request.rules else request.tool
        with Vertical(id="approval"):
            yield Static(Text(request.title, style="bold"), id="approval-title")
            yield Static(Text(f"Needs approval: {request.reason}"), id="approval-reason")
            if self.preview:
                with VerticalScroll(id="approval-preview"):
                    yield Static(Syntax(self.preview, self.lexer, theme="ansi_dark", background_color="default",
                                        word_wrap=True))
            keys = Text()
            for key, label in (("y", "allow once"), ("a", f"always allow {always}"), ("n", "deny with a note"),
                               ("esc", "deny")):
                keys.append(f" {key} ", style="bold reverse")
                keys.append(f" {label}   ")
            yield Static(keys, id="approval-keys")
            yield Input(placeholder="Tell the model why, or what to do instead (Enter to send)", id="deny-note")

    def on_mount(self) -> None:
        self.query_one("#deny-note", Input).display = False

    def action_allow_once(self) -> None:
        self.dismiss(Approval(Decision.ALLOW_ONCE))

    def action_allow_always(self) -> None:
        self.dismiss(Approval(Decision.ALLOW_ALWAYS))

    def action_deny(self) -> None:
        self.dismiss(Approval(Decision.DENY))

    def action_deny_with_note(self) -> None:
        note = self.query_one("#deny-note", Input)
        note.display = True
        note.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(Approval(Decision.DENY, event.value.strip()))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # While typing a note, letters are text, not shortcuts.
        if action in ("allow_once", "allow_always", "deny_with_note") and self.query_one("#deny-note").has_focus:
            return False
        return True
