"""The status bar: model, mode, tokens, cache hits, cost, context fill, git state."""

from __future__ import annotations

from dataclasses import dataclass, replace

from rich.text import Text
from textual.widgets import Static

from kimicode.events import UsageUpdated


@dataclass(frozen=True, slots=True)
class StatusInfo:
    model: str = ""
    provider: str = ""
    mode: str = "ask"
    usage: UsageUpdated | None = None
    branch: str | None = None  # None outside a git repository
    dirty: bool = False
    busy: bool = False


def tokens(count: int) -> str:
    if count < 1_000:
        return str(count)
    if count < 1_000_000:
        return f"{count / 1_000:.1f}k"
    return f"{count / 1_000_000:.2f}M"


def render_status(info: StatusInfo, width: int = 1_000) -> Text:
    """The status line for `width` columns: the least needed parts go first when it is narrow."""
    parts: list[tuple[int, Text]] = [  # (priority: lower is dropped later, text), in display order
        (0, Text(f" {info.mode} ", style=f"bold reverse {_MODE_STYLES.get(info.mode, '')}".strip())),
        (1, Text(f" {info.model or 'not connected'}", style="bold")),
    ]
    if info.provider:
        parts.append((7, Text(f" · {info.provider}", style="dim")))
    if (usage := info.usage) is not None:
        cached = 100 * usage.cached_tokens / usage.prompt_tokens if usage.prompt_tokens else 0
        fill = 100 * usage.context_tokens / usage.context_window if usage.context_window else 0
        parts.append((4, Text(f"  ↑{tokens(usage.prompt_tokens)} ↓{tokens(usage.completion_tokens)}")))
        parts.append((6, Text(f"  cache {cached:.0f}%", style="dim")))
        parts.append((2, Text(f"  ${usage.cost_usd:.4f}")))
        parts.append((3, Text(f"  ctx {fill:.0f}%", style="bold red" if fill >= 80 else "")))
    if info.branch is not None:
        parts.append((5, Text(f"  ⎇ {info.branch}{'*' if info.dirty else ''}", style="dim")))
    hint = "  esc to interrupt" if info.busy else "  shift+tab mode · /help"
    parts.append((1 if info.busy else 8, Text(hint, style="dim italic")))
    while sum(part.cell_len for _, part in parts) > width and len(parts) > 2:
        parts.remove(max(parts, key=lambda item: item[0]))
    return Text.assemble(*(part for _, part in parts))


_MODE_STYLES = {"ask": "", "auto-edit": "green", "auto": "yellow", "yolo": "red", "plan": "blue"}


class StatusBar(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.info = StatusInfo()

    def set(self, **changes) -> None:
        self.info = replace(self.info, **changes)
        self.refresh()

    def render(self) -> Text:
        return render_status(self.info, self.size.width)
