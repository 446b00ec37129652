"""The repo map: the best-ranked definitions as signature lines, grouped by file, within a
token budget. The same repository state and focus always give the same text, so a
provider's prompt cache keeps hitting while nothing changes."""

from __future__ import annotations

from collections.abc import Iterable

from kimicode.index.model import FileTags, Tag
from kimicode.index.rank import rank_definitions

CHARS_PER_TOKEN = 3.2  # as the agent's context meter: conservative for code
MIN_TOKENS, MAX_TOKENS = 1_024, 8_192


def default_budget(context_window: int) -> int:
    """An eighth of the model's window, clamped."""
    return max(MIN_TOKENS, min(MAX_TOKENS, context_window // 8))


def render_map(
    files: Iterable[FileTags],
    max_tokens: int,
    focus_files: set[str] = frozenset(),
    focus_names: set[str] = frozenset(),
) -> str:
    """As many of the best-ranked definitions as fit in `max_tokens`."""
    ranked = rank_definitions(files, focus_files, focus_names)
    low, high, best = 0, len(ranked), ""
    while low <= high:  # the most definitions whose rendering fits
        middle = (low + high) // 2
        text = _render([(path, tag) for _, path, tag in ranked[:middle]])
        if len(text) / CHARS_PER_TOKEN <= max_tokens:
            best, low = text, middle + 1
        else:
            high = middle - 1
    return best


def _render(chosen: list[tuple[str, Tag]]) -> str:
    by_file: dict[str, list[Tag]] = {}
    for path, tag in chosen:
        by_file.setdefault(path, []).append(tag)
    blocks = []
    for path in sorted(by_file):
        lines = [f"{path}:"]
        for tag in sorted(by_file[path], key=lambda t: (t.line, t.name)):
            depth = tag.scope.count(".") + 1 if tag.scope else 0
            signature = tag.signature or f"{tag.category} {tag.name}"
            lines.append(f"{tag.line:>5}│ {'    ' * depth}{signature}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
