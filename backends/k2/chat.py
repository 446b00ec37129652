"""K2 chat format: render OpenAI-style messages to K2 text, parse K2 replies back.

Pure Python (no torch): the API backend uses it too, to rescue tool calls that a
serving engine leaked into plain `content`.

Rendering yields pieces where the template's own markers are `Special` strings and
everything else (user input, file contents, tool output, earlier arguments) is a
plain `str`. The tokenizer maps only `Special` pieces to special ids, so untrusted
text can never smuggle a control token into the prompt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from kimicode.backends.base import ChatEvent, ReasoningDelta, TextDelta, ToolCallDelta, ToolCallDone


class Special(str):
    """A special-token string inserted by the template (or decoded from a special id)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Special({str.__repr__(self)})"


IM_SYSTEM = Special("<|im_system|>")
IM_USER = Special("<|im_user|>")
IM_ASSISTANT = Special("<|im_assistant|>")
IM_MIDDLE = Special("<|im_middle|>")
IM_END = Special("<|im_end|>")
THINK_BEGIN = Special("<think>")
THINK_END = Special("</think>")
TOOL_SECTION_BEGIN = Special("<|tool_calls_section_begin|>")
TOOL_SECTION_END = Special("<|tool_calls_section_end|>")
TOOL_CALL_BEGIN = Special("<|tool_call_begin|>")
TOOL_CALL_ARGUMENT_BEGIN = Special("<|tool_call_argument_begin|>")
TOOL_CALL_END = Special("<|tool_call_end|>")

# Either marker opens a tool section; engines sometimes drop the section token.
TOOL_SECTION_OPENERS = (TOOL_SECTION_BEGIN, TOOL_CALL_BEGIN)

DEFAULT_SYSTEM = "You are Kimi, an AI assistant created by Moonshot AI."


# --- rendering ---------------------------------------------------------------


def render(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    thinking: bool = False,
) -> str:
    """The K2 prompt text for `messages` (OpenAI chat format)."""
    return "".join(render_segments(messages, tools, add_generation_prompt, thinking))


def render_segments(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    thinking: bool = False,
) -> list[str]:
    """The prompt as pieces: `Special` markers and plain-text runs in between.

    Adjacent text is merged into one piece, so the tokenizer sees each run between
    two markers whole, as it would when encoding the rendered string.
    """
    out = _Pieces()
    if tools:
        out.turn(IM_SYSTEM, "tool_declare", json.dumps(tools, separators=(",", ":"), ensure_ascii=False))
    messages = normalize_tool_call_ids(messages)
    if not messages or messages[0].get("role") != "system":  # as the official template: only looks at the first
        out.turn(IM_SYSTEM, "system", DEFAULT_SYSTEM)
    # Thinking history: turns up to the last plain assistant reply lose their reasoning;
    # the current tool loop (after it) keeps it.
    last_plain_reply = max(
        (i for i, m in enumerate(messages) if m.get("role") == "assistant" and not m.get("tool_calls")),
        default=-1,
    )
    for position, message in enumerate(messages):
        role = message.get("role") or ""
        text = content_text(message.get("content"))
        if role == "user":
            out.turn(IM_USER, "user", text)
        elif role == "assistant":
            out.add(IM_ASSISTANT, "assistant", IM_MIDDLE)
            if thinking:
                reasoning = "" if position <= last_plain_reply else _plain(message.get("reasoning_content") or "")
                out.add(THINK_BEGIN, reasoning, THINK_END)
            out.add(text)
            if message.get("tool_calls"):
                out.add(TOOL_SECTION_BEGIN)
                for call in message["tool_calls"]:
                    arguments = _arguments_text((call.get("function") or {}).get("arguments"))
                    out.add(TOOL_CALL_BEGIN, call["id"], TOOL_CALL_ARGUMENT_BEGIN, arguments, TOOL_CALL_END)
                out.add(TOOL_SECTION_END)
            out.add(IM_END)
        elif role == "tool":
            out.turn(IM_SYSTEM, "tool", f"## Return of {message.get('tool_call_id') or ''}\n{text}")
        else:  # system, and any other role the way the official template does it
            out.turn(IM_SYSTEM, _plain(role), text)
    if add_generation_prompt:
        out.add(IM_ASSISTANT, "assistant", IM_MIDDLE)
    return out.pieces


class _Pieces:
    """Collects the prompt; callers pass message text through `_plain`, so that only
    the template's own constants arrive here as Special."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def add(self, *parts: str) -> None:
        for part in parts:
            if isinstance(part, Special):
                self.pieces.append(part)
            elif part:
                if self.pieces and not isinstance(self.pieces[-1], Special):
                    self.pieces[-1] += part
                else:
                    self.pieces.append(part)

    def turn(self, opener: Special, role: str, text: str) -> None:
        self.add(opener, role, IM_MIDDLE, text, IM_END)


def content_text(content: Any) -> str:
    """Message content as text: None -> "", content parts -> their text joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return _plain(content)
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(_plain(part))
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                parts.append(_plain(part.get("text") or ""))
        return "".join(parts)
    return _plain(content)


def _plain(value: Any) -> str:
    """`value` as an exact str: a Special that arrives inside a message is just text."""
    return str(value)  # str() of a str subclass is an exact str


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return _plain(arguments)
    return json.dumps({} if arguments is None else arguments, separators=(",", ":"), ensure_ascii=False)


def normalize_tool_call_ids(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A shallow copy of every message, with tool-call ids rewritten to K2's own
    `functions.{name}:{idx}` (idx runs over the conversation) and tool results
    pointing at the new ids. Foreign ids teach the model ids its parsers reject."""
    unanswered: dict[Any, list[str]] = {}  # provider id -> new ids not yet answered, oldest first
    index = 0
    out = []
    for message in messages:
        message = dict(message)
        if message.get("role") == "assistant" and message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                new_id = f"functions.{(call.get('function') or {}).get('name', '')}:{index}"
                index += 1
                unanswered.setdefault(call.get("id"), []).append(new_id)
                calls.append({**call, "id": new_id})
            message["tool_calls"] = calls
        elif message.get("role") == "tool":
            # A reused provider id answers its calls in order; a missing or unknown one
            # answers the oldest call still waiting.
            waiting = unanswered.get(message.get("tool_call_id")) or next((q for q in unanswered.values() if q), None)
            if waiting:
                message["tool_call_id"] = waiting.pop(0)
        out.append(message)
    return out


# --- parsing -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedToolCall:
    id: str  # as written by the model, e.g. "functions.read_file:3"
    name: str
    arguments: str  # raw JSON text, stripped
    arguments_error: str | None = None  # why `arguments` is not a JSON object, if it is not


class ParsedReply(NamedTuple):
    reasoning: str
    content: str
    tool_calls: list[ParsedToolCall]


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
    return parse(section).tool_calls


def parse(text: str | Iterable[str], *, reasoning: bool = False, text_markers: bool = True) -> ParsedReply:
    """A whole reply split into reasoning, content and tool calls; never raises.

    `text` is a string or a sequence of pieces (as StreamDecoder yields). The
    options are StreamParser's; parse is exactly a StreamParser fed everything.
    """
    parser = StreamParser(reasoning=reasoning, text_markers=text_markers)
    events = [event for piece in ([text] if isinstance(text, str) else text) for event in parser.feed(piece)]
    events += parser.finish()
    return ParsedReply(
        "".join(e.text for e in events if isinstance(e, ReasoningDelta)),
        "".join(e.text for e in events if isinstance(e, TextDelta)),
        [ParsedToolCall(e.id, e.name, e.arguments, e.arguments_error) for e in events if isinstance(e, ToolCallDone)],
    )


_MARKERS = (
    THINK_BEGIN, THINK_END, TOOL_SECTION_BEGIN, TOOL_SECTION_END,
    TOOL_CALL_BEGIN, TOOL_CALL_ARGUMENT_BEGIN, TOOL_CALL_END, IM_END,
)
_MARKER_PATTERN = re.compile("|".join(re.escape(m) for m in _MARKERS))
_LONGEST_MARKER = max(len(m) for m in _MARKERS)


class StreamParser:
    """Turns a K2 reply, fed in chunks split anywhere, into backend events.

    Rules (parse follows them too):
    - reasoning: a `<think>` before any content opens it; `reasoning=True` means the
      prompt already opened it. It ends at `</think>` or at a tool section; when
      never closed, everything is reasoning. A stray `</think>` outside reasoning
      is dropped and the text before it stays content: streamed text cannot be
      taken back, so callers that open `<think>` in the prompt must say so.
    - reasoning, content and each call's arguments are stripped of surrounding
      whitespace; text between calls is ignored; `<|im_end|>` ends the reply.
    - a call ends at `<|tool_call_end|>`, the next call, the section end,
      `<|im_end|>` or finish(); its id is kept as written, its name is the bare
      tool name, invalid JSON sets `arguments_error`.
    - with `text_markers=True` markers are recognised in plain text (the API
      backend's leaked markup); a partial marker at a chunk's end is held back.
      The engine passes `text_markers=False` and feeds `Special` pieces for
      special ids, so a file the model writes that mentions `<|tool_call_end|>`
      stays inside its arguments.
    """

    def __init__(self, reasoning: bool = False, text_markers: bool = True):
        self._text_markers = text_markers
        self._pending = ""  # a possible marker start, held back until the next chunk
        self._state = "reasoning" if reasoning else "content"
        self._may_open_think = not reasoning
        self._reasoning = _Stripped()
        self._content = _Stripped()
        self._arguments = _Stripped()
        self._call_id = ""
        self._calls_done = 0

    def feed(self, chunk: str) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        for is_marker, text in self._lex(chunk):
            if is_marker:
                self._on_marker(text, events)
            else:
                self._on_text(text, events)
        return events

    def finish(self) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        rest, self._pending = self._pending, ""
        self._on_text(rest, events)
        self._close_call(events)
        self._state = "done"
        return events

    def _lex(self, chunk: str) -> list[tuple[bool, str]]:
        """(is_marker, text) pairs; a Special chunk is always one marker."""
        if isinstance(chunk, Special):
            rest, self._pending = self._pending, ""
            return [(False, rest), (True, str(chunk))]
        if not self._text_markers:
            return [(False, chunk)]
        buffer = self._pending + chunk
        out, start = [], 0
        for match in _MARKER_PATTERN.finditer(buffer):
            out += [(False, buffer[start : match.start()]), (True, match.group())]
            start = match.end()
        keep = _partial_marker_length(buffer, start)
        self._pending = buffer[len(buffer) - keep :]
        out.append((False, buffer[start : len(buffer) - keep]))
        return out

    def _on_text(self, text: str, events: list[ChatEvent]) -> None:
        if not text:
            return
        if self._state == "reasoning":
            if delta := self._reasoning.feed(text):
                events.append(ReasoningDelta(delta))
        elif self._state == "content":
            if delta := self._content.feed(text):
                self._may_open_think = False
                events.append(TextDelta(delta))
        elif self._state in ("section", "call_id"):
            self._call_id += text  # in "section": the id of a call whose begin marker is missing
        elif self._state == "arguments":
            if delta := self._arguments.feed(text):
                events.append(ToolCallDelta(self._calls_done, None, delta))

    def _on_marker(self, marker: str, events: list[ChatEvent]) -> None:
        state = self._state
        if state == "done" or marker not in _MARKERS:
            return  # other special tokens are control noise, never text
        if state == "section" and marker != TOOL_CALL_ARGUMENT_BEGIN:
            self._call_id = ""  # text between calls is not an id
        if marker == IM_END:
            self._close_call(events)
            self._state = "done"
        elif marker == TOOL_CALL_ARGUMENT_BEGIN and state in ("section", "call_id"):
            events.append(ToolCallDelta(self._calls_done, tool_name_from_id(self._call_id.strip()), ""))
            self._state = "arguments"
        elif state in ("call_id", "arguments"):
            if marker in (TOOL_CALL_BEGIN, TOOL_CALL_END, TOOL_SECTION_END):
                self._close_call(events)
                self._state = "content" if marker == TOOL_SECTION_END else "section"
                if marker == TOOL_CALL_BEGIN:
                    self._state = "call_id"
            else:  # e.g. `<think>` inside a JSON string
                self._on_text(marker, events)
        elif marker in TOOL_SECTION_OPENERS:
            self._may_open_think = False
            self._call_id = ""
            self._state = "call_id" if marker == TOOL_CALL_BEGIN else "section"
        elif marker == THINK_BEGIN and state == "content" and self._may_open_think:
            self._may_open_think = False
            self._state = "reasoning"
        elif marker == THINK_BEGIN and state in ("reasoning", "content"):
            if not (state == "reasoning" and not self._reasoning.started):  # a repeated opener is dropped
                self._on_text(marker, events)
        elif marker == THINK_END and state == "reasoning":
            self._state = "content"
        elif marker == TOOL_SECTION_END and state == "section":
            self._state = "content"
        # anything else (a stray `</think>`, a call end outside a call) is dropped

    def _close_call(self, events: list[ChatEvent]) -> None:
        if self._state not in ("call_id", "arguments"):
            return
        call_id, arguments = self._call_id.strip(), self._arguments.text
        name = tool_name_from_id(call_id)
        if self._state == "call_id":
            if not call_id:
                return  # nothing was written: not a call
            events.append(ToolCallDelta(self._calls_done, name, ""))
        events.append(ToolCallDone(call_id, name, arguments, arguments_error(arguments)))
        self._calls_done += 1
        self._call_id, self._arguments = "", _Stripped()


class _Stripped:
    """Streams text with surrounding whitespace removed: leading whitespace is
    dropped, trailing whitespace held until more text follows it."""

    def __init__(self) -> None:
        self.text = ""  # everything emitted so far
        self._held = ""

    @property
    def started(self) -> bool:
        return bool(self.text)

    def feed(self, text: str) -> str:
        if not self.text:
            text = text.lstrip()
        text = self._held + text
        visible = text.rstrip()
        self._held = text[len(visible) :]
        self.text += visible
        return visible


def _partial_marker_length(text: str, start: int) -> int:
    """Length of the longest suffix of text[start:] that begins some marker."""
    at = text.find("<", max(start, len(text) - _LONGEST_MARKER + 1))
    while at >= 0:
        if any(m.startswith(text[at:]) for m in _MARKERS):
            return len(text) - at
        at = text.find("<", at + 1)
    return 0


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # json.loads accepts NaN and Infinity; JSON does not


def arguments_error(arguments: str) -> str | None:
    """Why `arguments` is not a JSON object, or None."""
    if not arguments:
        return "no arguments"
    try:
        value = json.loads(arguments, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} at position {exc.pos}"
    except ValueError as exc:
        return f"invalid JSON: {exc}"
    if not isinstance(value, dict):
        return f"arguments must be a JSON object, got {type(value).__name__}"
    return None
