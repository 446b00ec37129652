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


def render_status(info: StatusInfo) -> Text:
    text = Text()
    text.append(f" {info.mode} ", style=f"bold reverse {_MODE_STYLES.get(info.mode, '')}".strip())
    text.append(f" {info.model or 'not connected'}", style="bold")
    if info.provider:
        text.append(f" · {info.provider}", style="dim")
    if (usage := info.usage) is not None:
        cached = 100 * usage.cached_tokens / usage.prompt_tokens if usage.prompt_tokens else 0
        fill = 100 * usage.context_tokens / usage.context_window if usage.context_window else 0
        text.append(f"  ↑{tokens(usage.prompt_tokens)} ↓{tokens(usage.completion_tokens)}")
        text.append(f"  cache {cached:.0f}%", style="dim")
        text.append(f"  ${usage.cost_usd:.4f}")
        text.append(f"  ctx {fill:.0f}%", style="bold red" if fill >= 80 else "")
    if info.branch is not None:
        text.append(f"  ⎇ {info.branch}{'*' if info.dirty else ''}", style="dim")
    text.append("  esc to interrupt" if info.busy else "  shift+tab mode · /help", style="dim italic")
    return text


_MODE_STYLES = {"ask": "", "auto-edit": "green", "auto": "yellow", "yolo": "red", "plan": "blue"}


class StatusBar(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.info = StatusInfo()

    def set(self, **changes) -> None:
        self.info = replace(self.info, **changes)
        self.update(render_status(self.info))
