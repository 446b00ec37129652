"""One tool call: a compact row (status, title, duration) that folds out to its output."""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from rich.text import Text
from textual.widgets import Collapsible, Static

from kimicode.tui.widgets.chat import StreamedText

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
MAX_OUTPUT_LINES = 200  # shown when folded out; the model saw its own (capped) copy
SHOW_DURATION_FROM = 1.0  # s: quicker calls would only add noise


class ToolCallRow(Collapsible):
    """`result` given: a call that already finished (a replayed session), drawn as such."""

    def __init__(
        self,
        call_id: str,
        tool: str,
        title: str,
        kind: str,
        arguments: dict[str, Any],
        result: tuple[str, bool, dict[str, Any], float] | None = None,  # output, is_error, display, duration
    ) -> None:
        self.call_id = call_id
        self.tool = tool
        self.arguments = arguments
        self.summary = title
        self.live = StreamedText(classes="tool-live")  # shell output while it runs
        self.result = Static(classes="tool-output")
        self._frame = 0
        self._running = result is None
        if result is None:
            # Shell output streams in open; everything else stays folded until it has a result.
            heading, state, collapsed = self._heading(SPINNER[0]), "running", tool != "shell"
        else:
            output, is_error, display, duration = result
            heading, state, collapsed = self._final_heading(is_error, duration), _state(is_error), True
            self.live.display = False
            self.result.update(result_renderable(tool, output, is_error, display))
        super().__init__(self.live, self.result, title=heading, collapsed=collapsed,
                         classes=f"tool-call {state} kind-{kind}")

    def on_mount(self) -> None:
        if self._running:
            self._spinner = self.set_interval(0.1, self._spin)

    def _spin(self) -> None:
        self._frame = (self._frame + 1) % len(SPINNER)
        self.title = self._heading(SPINNER[self._frame])

    def _heading(self, status: str, duration: float = 0.0) -> str:
        took = f"  {duration:.1f}s" if duration >= SHOW_DURATION_FROM else ""
        return f"{status} {self.summary}{took}"

    def _final_heading(self, is_error: bool, duration: float) -> str:
        return self._heading("✗" if is_error else "✓", duration)

    def output(self, text: str) -> None:
        self.live.add(text)

    def waiting_for_approval(self) -> None:
        self._spinner.pause()
        self.title = self._heading("?") + "  (waiting for approval)"

    def approved(self) -> None:
        if self._running:
            self._spinner.resume()

    def finish(self, output: str, is_error: bool, display: dict[str, Any], duration: float) -> None:
        self._running = False
        self._spinner.stop()
        self.remove_class("running")
        self.add_class(_state(is_error))
        self.title = self._final_heading(is_error, duration)
        self.live.display = False
        self.result.update(result_renderable(self.tool, output, is_error, display))
        # Diffs and failures are what a user wants to see; the rest stays one line.
        self.collapsed = not (is_error or "diff" in display)


def _state(is_error: bool) -> str:
    return "error" if is_error else "ok"


def result_renderable(tool: str, output: str, is_error: bool, display: dict[str, Any]) -> RenderableType:
    from rich.syntax import Syntax  # pygments: loaded with the first result, not before the first paint

    diff = display.get("diff")
    if diff and not is_error:
        return Syntax(_cap(diff), "diff", theme="ansi_dark", background_color="default", word_wrap=True)
    if "command" in display:
        text = Text(f"$ {display['command']}\n", style="bold")
        text.append(_cap(str(display.get("output", output))))
        code = display.get("exit_code")
        if code not in (0, None):
            text.append(f"\nexit code {code}", style="bold red")
        return text
    return Text(_cap(output), style="red" if is_error else "")


def _cap(text: str) -> str:
    lines = text.rstrip("\n").splitlines()
    if len(lines) <= MAX_OUTPUT_LINES:
        return "\n".join(lines)
    return "\n".join(lines[:MAX_OUTPUT_LINES] + [f"… {len(lines) - MAX_OUTPUT_LINES} more lines"])
