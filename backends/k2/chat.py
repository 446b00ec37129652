"""K2 chat-format text: special-token strings and the tool-call section parser.

Pure Python (no torch): the API backend uses it too, to rescue tool calls that a
serving engine leaked into plain `content`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TOOL_SECTION_BEGIN = "<|tool_calls_section_begin|>"
TOOL_SECTION_END = "<|tool_calls_section_end|>"
TOOL_CALL_BEGIN = "<|tool_call_begin|>"
TOOL_CALL_ARGUMENT_BEGIN = "<|tool_call_argument_begin|>"
TOOL_CALL_END = "<|tool_call_end|>"

# Either marker opens a tool section; engines sometimes drop the section token.
TOOL_SECTION_OPENERS = (TOOL_SECTION_BEGIN, TOOL_CALL_BEGIN)

_CALL = re.compile(
    re.escape(TOOL_CALL_BEGIN)
    + r"\s*(?P<id>.*?)\s*"
    + re.escape(TOOL_CALL_ARGUMENT_BEGIN)
    + r"(?P<arguments>.*?)"
    + r"(?:" + re.escape(TOOL_CALL_END) + r"|(?=" + re.escape(TOOL_CALL_BEGIN) + r")|$)",
    re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class ParsedToolCall:
    id: str  # as written by the model, e.g. "functions.read_file:3"
    name: str
    arguments: str  # raw JSON text, not validated here


def tool_name_from_id(call_id: str) -> str:
    """`functions.read_file:3` -> `read_file`; tolerates a missing prefix or index."""
    head = call_id.rsplit(":", 1)[0] if ":" in call_id else call_id
    return head.rsplit(".", 1)[-1].strip()


def split_tool_section(text: str) -> tuple[str, str | None]:
    """Split model text into (content before the tool section, the section or None)."""
    starts = [i for i in (text.find(m) for m in TOOL_SECTION_OPENERS) if i >= 0]
    if not starts:
        return text, None
    start = min(starts)
    return text[:start], text[start:]


def parse_tool_section(section: str) -> list[ParsedToolCall]:
    """Every call in a tool section; a missing end token or section end is tolerated."""
    section = section.replace(TOOL_SECTION_BEGIN, "").replace(TOOL_SECTION_END, "")
    calls = []
    for match in _CALL.finditer(section):
        call_id = match.group("id").strip()
        calls.append(ParsedToolCall(call_id, tool_name_from_id(call_id), match.group("arguments").strip()))
    return calls
