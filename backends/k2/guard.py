"""Guarded decoding of K2 tool-call sections (pure Python, no torch).

Inside `<|tool_calls_section_begin|>` the engine asks `ToolCallGuard.allows`
about each candidate token's text and takes the first allowed one; when none
is, it emits `forced_text()`, which is always allowed and finishes the section
in at most six steps. The grammar checked, after the section begin token:

    ws* ( <|tool_call_begin|> ws* functions.NAME:INDEX ws*
          <|tool_call_argument_begin|> ws* JSON_OBJECT ws* <|tool_call_end|> ws* )+
    <|tool_calls_section_end|>

Markers are special tokens only: ordinary text never spells one (outside JSON
strings `<` is not a grammar character). NAME is a declared tool name, INDEX
counts calls from `first_index`. With no tools declared the only thing allowed
is `<|tool_calls_section_end|>`, so an accidental section closes at once.
"""

from __future__ import annotations

import re
from typing import Iterable

from kimicode.backends.k2.chat import (
    TOOL_CALL_ARGUMENT_BEGIN,
    TOOL_CALL_BEGIN,
    TOOL_CALL_END,
    TOOL_SECTION_BEGIN,
    TOOL_SECTION_END,
)

_WS = " \t\n\r"  # JSON whitespace; also what the section grammar tolerates

# ---------------------------------------------------------------- JSON prefix

# What the scanner expects next. Ints keep the per-char comparisons cheap.
_VALUE = 0         # a value (after ':' or ',' in an array, or at the top)
_ARRAY_FIRST = 1   # a value or ']' (right after '[')
_OBJECT_FIRST = 2  # '"' or '}' (right after '{')
_KEY = 3           # '"' (after ',' in an object)
_COLON = 4
_AFTER = 5         # ',' or the container's closer; only ws at the top
_STRING = 6
_ESCAPE = 7        # after a backslash
_HEX = 8           # inside \uXXXX; aux = digits seen
_LITERAL = 9       # inside true/false/null; aux = the rest to spell
_NUM_MINUS = 10    # '-'
_NUM_ZERO = 11     # a leading '0' (no more int digits may follow)
_NUM_INT = 12
_NUM_DOT = 13
_NUM_FRAC = 14
_NUM_E = 15
_NUM_ESIGN = 16
_NUM_EXP = 17

_NUMBER_DONE = frozenset((_NUM_ZERO, _NUM_INT, _NUM_FRAC, _NUM_EXP))
_DIGITS = "0123456789"
_HEX_DIGITS = "0123456789abcdefABCDEF"
_ESCAPABLE = '"\\/bfnrtu'
_LITERAL_REST = {"t": "rue", "f": "alse", "n": "ull"}
_CLOSERS = str.maketrans("{[", "}]")
# A run of plain string characters, skipped in one C-level match.
_STRING_RUN = re.compile(r'[^"\\\x00-\x1f]+')

# Scanner state: (stack of open "{" / "[" as a str, mode, aux, in_key).
# A tuple of immutables, so copying it is free.
_State = tuple


class JsonPrefix:
    """Incremental validator of one JSON value's text (RFC 8259), char by char."""

    __slots__ = ("top_level_object", "_state")

    def __init__(self, top_level_object: bool = True):
        self.top_level_object = top_level_object
        self._state: _State = ("", _VALUE, None, False)

    def feed(self, text: str) -> bool:
        """Append `text`; False (state unchanged) if it would break the prefix."""
        state = self._scan(text)
        if state is None:
            return False
        self._state = state
        return True

    def accepts(self, text: str) -> bool:
        return self._scan(text) is not None

    @property
    def complete(self) -> bool:
        stack, mode, _, _ = self._state
        return not stack and (mode == _AFTER or mode in _NUMBER_DONE)

    def copy(self) -> "JsonPrefix":
        clone = JsonPrefix(self.top_level_object)
        clone._state = self._state
        return clone

    def closing_text(self) -> str:
        """Short text that, fed next, makes the value complete ('' if it is)."""
        stack, mode, aux, in_key = self._state
        after_key = ":0" if in_key else ""
        if mode == _STRING:
            head = '"' + after_key
        elif mode == _ESCAPE:
            head = '""' + after_key  # `\"` is an escaped quote, then the real one
        elif mode == _HEX:
            head = "0" * (4 - aux) + '"' + after_key
        elif mode == _LITERAL:
            head = aux
        elif mode in (_NUM_MINUS, _NUM_DOT, _NUM_E, _NUM_ESIGN):
            head = "0"
        elif mode == _VALUE:
            head = "{}" if not stack and self.top_level_object else "0"
        elif mode == _KEY:
            head = '"":0'
        elif mode == _COLON:
            head = ":0"
        else:  # _AFTER, _ARRAY_FIRST, _OBJECT_FIRST, finished numbers
            head = ""
        return head + stack[::-1].translate(_CLOSERS)

    def _scan(self, text: str) -> _State | None:
        """The state after `text`, or None if `text` breaks the prefix."""
        stack, mode, aux, in_key = self._state
        i, n = 0, len(text)
        while i < n:
            if mode == _STRING:
                run = _STRING_RUN.match(text, i)
                if run:
                    i = run.end()
                    continue
                ch = text[i]
                if ch == '"':
                    mode = _COLON if in_key else _AFTER
                elif ch == "\\":
                    mode = _ESCAPE
                else:
                    return None  # a raw control character
                i += 1
                continue
            ch = text[i]
            if mode == _AFTER:
                if ch in _WS:
                    pass
                elif not stack:
                    return None  # a second top-level value
                elif ch == ",":
                    mode = _KEY if stack[-1] == "{" else _VALUE
                elif ch == ("}" if stack[-1] == "{" else "]"):
                    stack = stack[:-1]
                else:
                    return None
            elif mode == _VALUE or mode == _ARRAY_FIRST:
                if ch in _WS:
                    pass
                elif ch == "]" and mode == _ARRAY_FIRST:
                    stack, mode = stack[:-1], _AFTER
                elif self.top_level_object and not stack and ch != "{":
                    return None
                else:
                    started = _start_value(ch, stack)
                    if started is None:
                        return None
                    stack, mode, aux = started
                    in_key = False
            elif mode == _OBJECT_FIRST or mode == _KEY:
                if ch in _WS:
                    pass
                elif ch == '"':
                    mode, in_key = _STRING, True
                elif ch == "}" and mode == _OBJECT_FIRST:
                    stack, mode = stack[:-1], _AFTER
                else:
                    return None
            elif mode == _COLON:
                if ch == ":":
                    mode, in_key = _VALUE, False
                elif ch not in _WS:
                    return None
            elif mode == _ESCAPE:
                if ch not in _ESCAPABLE:
                    return None
                mode, aux = (_HEX, 0) if ch == "u" else (_STRING, None)
            elif mode == _HEX:
                if ch not in _HEX_DIGITS:
                    return None
                aux += 1
                if aux == 4:
                    mode, aux = _STRING, None
            elif mode == _LITERAL:
                if ch != aux[0]:
                    return None
                aux = aux[1:]
                if not aux:
                    mode, aux = _AFTER, None
            else:
                mode = _number_step(mode, ch)
                if mode is None:
                    return None
                if mode == _AFTER:
                    continue  # the number ended; `ch` belongs to what follows
            i += 1
        return stack, mode, aux, in_key


def _start_value(ch: str, stack: str) -> tuple[str, int, object] | None:
    """(stack, mode, aux) once `ch` opens a value, or None if it cannot."""
    if ch == "{":
        return stack + "{", _OBJECT_FIRST, None
    if ch == "[":
        return stack + "[", _ARRAY_FIRST, None
    if ch == '"':
        return stack, _STRING, None
    if ch == "-":
        return stack, _NUM_MINUS, None
    if ch == "0":
        return stack, _NUM_ZERO, None
    if ch in _DIGITS:
        return stack, _NUM_INT, None
    rest = _LITERAL_REST.get(ch)
    if rest is not None:
        return stack, _LITERAL, rest
    return None


def _number_step(mode: int, ch: str) -> int | None:
    """The number mode after `ch`; _AFTER if `ch` ends a finished number."""
    digit = ch in _DIGITS
    if mode == _NUM_MINUS:
        return (_NUM_ZERO if ch == "0" else _NUM_INT) if digit else None
    if mode == _NUM_DOT:
        return _NUM_FRAC if digit else None
    if mode == _NUM_E:
        return _NUM_EXP if digit else (_NUM_ESIGN if ch in "+-" else None)
    if mode == _NUM_ESIGN:
        return _NUM_EXP if digit else None
    if digit and mode != _NUM_ZERO:
        return mode  # _NUM_INT, _NUM_FRAC, _NUM_EXP keep going
    if ch == "." and mode in (_NUM_ZERO, _NUM_INT):
        return _NUM_DOT
    if ch in "eE" and mode != _NUM_EXP:
        return _NUM_E
    return None if digit else _AFTER  # "01" is invalid; anything else ends it


# ------------------------------------------------------------ the tool guard

_NAME_CHARS = re.compile(r"[A-Za-z0-9_.\-]+")
_FUNCTIONS = "functions."


class _NameNode:
    """A trie node over declared names; `shortest` completes it to some name."""

    __slots__ = ("children", "name", "shortest")

    def __init__(self):
        self.children: dict[str, _NameNode] = {}
        self.name: str | None = None
        self.shortest = ""


def _build_name_trie(names: Iterable[str]) -> _NameNode:
    root = _NameNode()
    for name in names:
        if not _NAME_CHARS.fullmatch(name):
            raise ValueError(f"tool name {name!r} has characters K2 tool ids cannot carry")
        node = root
        for ch in name:
            node = node.children.setdefault(ch, _NameNode())
        node.name = name
    _fill_shortest(root)
    return root


def _fill_shortest(node: _NameNode) -> None:
    for child in node.children.values():
        _fill_shortest(child)
    if node.name is None and node.children:
        node.shortest = min((ch + child.shortest for ch, child in node.children.items()),
                            key=lambda s: (len(s), s))


# Where the guard is in the section.
_START = 0       # before the first call: ws, then <|tool_call_begin|>
_PREFIX = 1      # spelling "functions."; pos = chars done
_NAME = 2        # spelling a declared name; node = trie node so far
_INDEX = 3       # spelling the call index; pos = digits done
_AFTER_ID = 4    # ws, then <|tool_call_argument_begin|>
_ARGS = 5        # the JSON object; ws after it goes to the JSON scanner too
_AFTER_CALL = 6  # ws, then another call or the section end
_DONE = 7


class ToolCallGuard:
    """Says which token texts may come next inside a K2 tool-call section."""

    MARKERS = (TOOL_SECTION_BEGIN, TOOL_CALL_BEGIN, TOOL_CALL_ARGUMENT_BEGIN, TOOL_CALL_END, TOOL_SECTION_END)

    def __init__(self, tool_names: Iterable[str], first_index: int = 0):
        self._root = _build_name_trie(tool_names)
        self._has_tools = bool(self._root.children)
        self._index = first_index
        self._index_text = str(first_index)
        self._phase = _START
        self._pos = 0
        self._node = self._root  # after the name, stays on its trie node until the call ends
        self._json = JsonPrefix()
        self._arg_parts: list[str] = []
        self._calls: list[tuple[str, str]] = []

    @property
    def done(self) -> bool:
        return self._phase == _DONE

    @property
    def calls(self) -> list[tuple[str, str]]:
        """Completed (name, arguments JSON text) pairs, in order."""
        return list(self._calls)

    def allows(self, text: str, *, special: bool = False) -> bool:
        if special:
            return self._special_allowed(text)
        if self._phase == _ARGS:
            return self._json._scan(text) is not None
        return self._scan_plain(text) is not None

    def advance(self, text: str, *, special: bool = False) -> None:
        """Take `text` as the next token; ValueError if it is not allowed."""
        if special:
            if not self._special_allowed(text):
                raise ValueError(f"special token {text!r} not allowed here")
            self._take_marker(text)
        elif self._phase == _ARGS:
            state = self._json._scan(text)
            if state is None:
                raise ValueError(f"{text!r} breaks the arguments JSON")
            self._json._state = state
            self._arg_parts.append(text)
        else:
            scanned = self._scan_plain(text)
            if scanned is None:
                raise ValueError(f"{text!r} not allowed here")
            self._phase, self._pos, self._node = scanned

    def forced_text(self) -> tuple[str, bool]:
        """(text, is_special): allowed now, and a step toward the section end."""
        phase = self._phase
        if phase == _START:
            return (TOOL_CALL_BEGIN, True) if self._has_tools else (TOOL_SECTION_END, True)
        if phase == _PREFIX:
            return _FUNCTIONS[self._pos:] + self._root.shortest + ":" + self._index_text, False
        if phase == _NAME:
            return self._node.shortest + ":" + self._index_text, False
        if phase == _INDEX and self._pos < len(self._index_text):
            return self._index_text[self._pos:], False
        if phase in (_INDEX, _AFTER_ID):
            return TOOL_CALL_ARGUMENT_BEGIN, True
        if phase == _ARGS:
            closing = self._json.closing_text()
            return (closing, False) if closing else (TOOL_CALL_END, True)
        if phase == _AFTER_CALL:
            return TOOL_SECTION_END, True
        raise RuntimeError("the tool section is already closed")

    def _special_allowed(self, text: str) -> bool:
        phase = self._phase
        if text == TOOL_CALL_BEGIN:
            return (phase == _START and self._has_tools) or phase == _AFTER_CALL
        if text == TOOL_SECTION_END:
            return phase == _AFTER_CALL or (phase == _START and not self._has_tools)
        if text == TOOL_CALL_ARGUMENT_BEGIN:
            return phase == _AFTER_ID or (phase == _INDEX and self._pos == len(self._index_text))
        if text == TOOL_CALL_END:
            return phase == _ARGS and self._json.complete
        return False  # <|im_end|>, <think>, a nested section begin, ...

    def _take_marker(self, text: str) -> None:
        if text == TOOL_CALL_BEGIN:
            self._phase, self._pos, self._node = _PREFIX, 0, self._root
        elif text == TOOL_CALL_ARGUMENT_BEGIN:
            self._phase = _ARGS
            self._json = JsonPrefix()
            self._arg_parts = []
        elif text == TOOL_CALL_END:
            self._calls.append((self._node.name, "".join(self._arg_parts).strip(_WS)))
            self._index += 1
            self._index_text = str(self._index)
            self._phase = _AFTER_CALL
        else:
            self._phase = _DONE

    def _scan_plain(self, text: str) -> tuple[int, int, _NameNode] | None:
        """(phase, pos, node) after ordinary `text` outside the JSON, or None."""
        phase, pos, node = self._phase, self._pos, self._node
        index_text = self._index_text
        for ch in text:
            if phase == _NAME:
                child = node.children.get(ch)
                if child is not None:
                    node = child
                elif ch == ":" and node.name is not None:
                    phase, pos = _INDEX, 0
                else:
                    return None
            elif phase == _PREFIX:
                if ch in _WS and pos == 0:
                    continue
                if ch != _FUNCTIONS[pos]:
                    return None
                pos += 1
                if pos == len(_FUNCTIONS):
                    phase, node = _NAME, self._root
            elif phase == _INDEX:
                if pos < len(index_text) and ch == index_text[pos]:
                    pos += 1
                elif pos == len(index_text) and ch in _WS:
                    phase = _AFTER_ID
                else:
                    return None
            elif phase in (_START, _AFTER_ID, _AFTER_CALL):
                if ch not in _WS:
                    return None
            else:  # _DONE
                return None
        return phase, pos, node
