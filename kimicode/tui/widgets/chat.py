"""The conversation: user prompts, streamed answers, thinking, notices."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Collapsible, Markdown, Static
from textual.widgets._markdown import MarkdownStream

FLUSH_INTERVAL = 1 / 30  # s: plain-text deltas are batched to at most 30 screen updates a second


class ChatLog(VerticalScroll, can_focus=False):
    """Scrolls with new content while the user is at the bottom; stays put when they scrolled up."""

    def on_mount(self) -> None:
        self.anchor()


class UserMessage(Static):
    def __init__(self, prompt: str, queued: bool = False) -> None:
        text = Text("❯ ", style="bold")
        text.append(prompt)
        super().__init__(text, classes="queued" if queued else None)


class Notice(Static):
    """A one-line note in the conversation: info (muted), warning or error."""

    def __init__(self, message: str, level: str = "info") -> None:
        super().__init__(Text(message), classes=level)


class AssistantMessage(Markdown):
    """An answer rendered as Markdown while it streams in."""

    def __init__(self) -> None:
        super().__init__()
        self._stream: MarkdownStream | None = None
        self.text = ""

    async def add(self, delta: str) -> None:
        if self._stream is None:
            self._stream = Markdown.get_stream(self)
        self.text += delta
        await self._stream.write(delta)

    async def finish(self) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None


class StreamedText(Static):
    """Plain text that grows by deltas; updates are batched so a fast stream costs few repaints."""

    def __init__(self, classes: str | None = None) -> None:
        super().__init__("", classes=classes, markup=False)
        self.text = ""
        self._dirty = False

    def add(self, delta: str) -> None:
        self.text += delta
        if not self._dirty:
            self._dirty = True
            self.set_timer(FLUSH_INTERVAL, self.flush)

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
