"""K2 repairs applied by the API backend, so one bad call never poisons a session.

- history tool-call ids are rewritten to K2's own `functions.{name}:{idx}` form;
- tool names like `functions.read_file:2` are reduced to the declared name;
- arguments get cheap JSON repairs; what stays invalid is flagged, and history
  only ever carries a JSON object (an invalid one would make providers reject
  every later request);
- tool-call markup leaked into `content` is withheld from the text and parsed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kimicode.backends.k2.chat import TOOL_SECTION_OPENERS, normalize_tool_call_ids, tool_name_from_id


def normalize_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of `messages` with K2-style tool-call ids, valid JSON arguments, and
reasoning kept only on the turns after the last user message."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    out = normalize_tool_call_ids(messages)  # copies every message
    for position, message in enumerate(out):
        if position < last_user:  # reasoning is only sent back for the current tool loop
            message.pop("reasoning_content", None)
        if message.get("role") == "assistant" and message.get("tool_calls"):
            message["tool_calls"] = [_with_valid_arguments(call) for call in message["tool_calls"]]
    return out


def _with_valid_arguments(call: dict[str, Any]) -> dict[str, Any]:
    function = call["function"]
    arguments, error = repair_arguments(function.get("arguments") or "")
    if error is not None:
        arguments = json.dumps({"_invalid_arguments": (function.get("arguments") or "")[:2000]})
    return {**call, "function": {**function, "arguments": arguments}}


def repair_tool_name(name: str, declared: set[str]) -> str:
    """The declared tool a K2-mangled name refers to, or the cleaned name."""
    if name in declared:
        return name
    cleaned = tool_name_from_id(name.strip())
    if cleaned in declared:
        return cleaned
    by_lower = {d.lower(): d for d in declared}
    return by_lower.get(cleaned.lower(), cleaned)


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def repair_arguments(text: str) -> tuple[str, str | None]:
    """(JSON object text, None) or (original text, why it is not a JSON object)."""
    candidates = [text.strip()]
    fenced = _FENCE.match(candidates[0])
    if fenced:
        candidates.append(fenced.group(1))
    candidates.append(_TRAILING_COMMA.sub(r"\1", candidates[-1]))
    if not candidates[0]:
        return "{}", None
    error = ""
    for candidate in candidates:
        try:
            value = json.loads(candidate, strict=False)  # strict=False: raw newlines in strings
        except json.JSONDecodeError as exc:
            error = error or f"invalid JSON: {exc}"
            continue
        if isinstance(value, str):  # double-encoded: a JSON string holding the object
            try:
                value = json.loads(value, strict=False)
            except json.JSONDecodeError:
                pass
            else:
                if isinstance(value, dict):
                    return json.dumps(value, ensure_ascii=False), None
        if not isinstance(value, dict):
            return text, f"arguments must be a JSON object, got {type(value).__name__}"
        return (text if _is_strict_json(text) else json.dumps(value, ensure_ascii=False)), None
    return text, error


def _is_strict_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


class LeakedMarkupFilter:
    """Streams content through, holding back K2 tool-call markup a server leaked into it.

    `feed` returns the text that is safe to show now; `finish` returns the rest of
    the text and the leaked tool section (or None).
    """

    def __init__(self) -> None:
        self._pending = ""  # text that might be the start of a marker
        self._section: str | None = None

    def feed(self, text: str) -> str:
        if self._section is not None:
            self._section += text
            return ""
        buffer = self._pending + text
        starts = [i for i in (buffer.find(m) for m in TOOL_SECTION_OPENERS) if i >= 0]
        if starts:
            start = min(starts)
            self._section, self._pending = buffer[start:], ""
            return buffer[:start]
        keep = _partial_marker_suffix(buffer)
        self._pending = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def finish(self) -> tuple[str, str | None]:
        rest, self._pending = self._pending, ""
        return rest, self._section


def _partial_marker_suffix(text: str) -> int:
    """Length of the longest suffix of `text` that begins some marker."""
    best = 0
    for marker in TOOL_SECTION_OPENERS:
        for size in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:size]):
                best = size
                break
    return best


def arguments_object(arguments: str | None) -> dict[str, Any]:
    """A call's JSON arguments as a dict; {} for anything else (history shown to people)."""
    try:
        value = json.loads(arguments or "{}", strict=False)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
