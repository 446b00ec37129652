"""The conversation: user prompts, streamed answers, thinking, notices."""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text
from textual.containers import Vertical, VerticalScroll
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Collapsible, Static

FLUSH_INTERVAL = 0.1  # s: deltas are batched to at most 10 redraws a second, so typing stays responsive


class ChatLog(VerticalScroll, can_focus=False):
    """Scrolls with new content while the user is at the bottom; stays put when they scrolled up."""

    def on_mount(self) -> None:
        self.anchor()


class UserMessage(Static):
    def __init__(self, prompt: str, queued: bool = False) -> None:
        self.prompt = prompt
        text = Text("❯ ", style="bold")
        text.append(prompt)
        super().__init__(text, classes="queued" if queued else None)


class Notice(Static):
    """A one-line note in the conversation: info (muted), warning or error."""

    def __init__(self, message: str, level: str = "info") -> None:
        super().__init__(Text(message), classes=level)


class _Batched:
    """Collects streamed deltas in `text`; the widget's `flush` redraws at most every FLUSH_INTERVAL."""

    text: str
    _dirty: bool

    def add(self, delta: str) -> None:
        self.text += delta
        if not self._dirty:
            self._dirty = True
            self.set_timer(FLUSH_INTERVAL, self.flush)  # type: ignore[attr-defined]

    def flush(self) -> None:
        raise NotImplementedError


class RenderedMarkdown(Widget):
    """Finished Markdown blocks, rendered to lines once (again only when the width changes):
    layout and repaint cost the same however long the answer grows."""

    def __init__(self) -> None:
        super().__init__(classes="answer-sealed")
        self._texts: list[str] = []
        self._lines: list[Strip] = []
        self._width = 0

    def append(self, text: str) -> None:
        self._texts.append(text)
        if self._width:
            self._lines += self._render(text, self._width)
        self.refresh(layout=True)

    def _render(self, text: str, width: int) -> list[Strip]:
        console = self.app.console
        options = console.options.update(width=width, height=None)
        return [Strip(line) for line in console.render_lines(markdown(text), options, pad=False)]

    def _ensure_width(self, width: int) -> None:
        if width != self._width and width > 0:
            self._width = width
            self._lines = [line for text in self._texts for line in self._render(text, width)]

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        self._ensure_width(width)
        return len(self._lines)

    def render_line(self, y: int) -> Strip:
        self._ensure_width(self.size.width)
        style = self.rich_style
        if y >= len(self._lines):
            return Strip.blank(self.size.width, style)
        return self._lines[y].apply_style(style).crop_extend(0, self.size.width, style)


class AssistantMessage(_Batched, Vertical):
    """An answer rendered as Markdown while it streams in.

    Re-rendering a whole long answer for every delta would grow with its length and
    starve the keyboard, so finished blocks move into a RenderedMarkdown (rendered once)
    and only the live tail is redrawn, at most 10 times a second."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.text = ""
        self._sealed = RenderedMarkdown()
        self._live = Static(classes="answer-live")
        self._live_start = 0  # offset in self.text where the live tail begins
        self._dirty = False
        self._pending = text

    def compose(self):
        yield self._sealed
        yield self._live

    def on_mount(self) -> None:
        if self._pending:
            self.add(self._pending)
            self.flush()

    def flush(self) -> None:
        self._dirty = False
        live = self.text[self._live_start :]
        while (cut := segment_end(live)) is not None:
            self._sealed.append(live[:cut])
            self._live_start += cut
            live = live[cut:]
        self._live.update(markdown(live) if live else "")
        self._live.display = bool(live)

    def finish(self) -> None:
        self.flush()


SEGMENT_LINES = 20  # a segment is sealed at the first block boundary after this many lines


def segment_end(text: str) -> int | None:
    """Where to cut `text` into a finished segment: after a blank line outside a code
    fence, once SEGMENT_LINES lines are complete; None if not yet."""
    if text.count("\n") < SEGMENT_LINES:
        return None
    in_fence = False
    offset = 0
    for number, line in enumerate(text.splitlines(keepends=True)):
        offset += len(line)
        if not line.endswith("\n"):
            break  # the last line is still streaming
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and not line.strip() and number >= SEGMENT_LINES:
            return offset
    return None


def markdown(text: str) -> RenderableType:
    from rich.markdown import Markdown  # loaded with the first answer, not before the first paint

    return Markdown(text, code_theme="ansi_dark", hyperlinks=False)


class StreamedText(_Batched, Static):
    """Plain text that grows by deltas; updates are batched so a fast stream costs few repaints."""

    def __init__(self, classes: str | None = None) -> None:
        super().__init__("", classes=classes, markup=False)
        self.text = ""
        self._dirty = False

    def flush(self) -> None:
        self._dirty = False
        self.update(self.text)


class ThinkingBlock(Collapsible):
    """K2's reasoning: dimmed, open while it streams, folded once the answer begins."""

    def __init__(self) -> None:
        self.body = StreamedText(classes="thinking-text")
        super().__init__(self.body, title="Thinking…", collapsed=False, classes="thinking")

    def add(self, delta: str) -> None:
        self.body.add(delta)

    def finish(self) -> None:
        self.body.flush()
        lines = self.body.text.strip().count("\n") + 1
        self.title = f"Thought ({lines} line{'s' if lines != 1 else ''})"
        self.collapsed = True
