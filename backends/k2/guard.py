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

When a tool comes with its parameters schema, JSON_OBJECT must also fit it:
`SchemaJsonPrefix` (json_prefix.py) checks the subset pydantic emits,
and the forced closing adds any missing required keys with minimal values.
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
from kimicode.backends.k2.json_prefix import _OBJ, _WS, JsonPrefix, SchemaJsonPrefix, SchemaNode, compile_schema

# ------------------------------------------------------------ the tool guard

# No ".": K2's parsers take the name after the last "." of "functions.NAME:INDEX".
_NAME_CHARS = re.compile(r"[A-Za-z0-9_\-]+")
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


def _names_and_schemas(tools: Iterable[str | dict]) -> tuple[list[str], dict[str, dict]]:
    names: list[str] = []
    schemas: dict[str, dict] = {}
    for tool in tools:
        if isinstance(tool, str):
            names.append(tool)
            continue
        function = tool.get("function", tool)
        names.append(function["name"])
        if isinstance(function.get("parameters"), dict):
            schemas[function["name"]] = function["parameters"]
    return names, schemas


def _arguments_node(schema: dict) -> SchemaNode | None:
    """The compiled schema of a call's arguments, or None when it checks nothing
    beyond "a JSON object" (plain JsonPrefix is then enough, and faster)."""
    node = compile_schema(schema)
    return None if not node.types & _OBJ or node.free else node


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

    def __init__(self, tool_names: Iterable[str | dict], first_index: int = 0,
                 schemas: dict[str, dict] | None = None):
        """`tool_names` holds names, or OpenAI `tools` entries whose `parameters`
        then constrain each call's arguments; `schemas` (name -> parameters schema)
        adds to or overrides those."""
        names, declared = _names_and_schemas(tool_names)
        declared.update(schemas or {})
        self._root = _build_name_trie(names)
        self._schemas = {name: _arguments_node(schema) for name, schema in declared.items() if name in names}
        self._has_tools = bool(self._root.children)
        self._index = first_index
        self._index_text = str(first_index)
        self._phase = _START
        self._pos = 0
        self._node = self._root  # after the name, stays on its trie node until the call ends
        self._json: JsonPrefix | SchemaJsonPrefix = JsonPrefix()
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
            node = self._schemas.get(self._node.name)
            self._json = JsonPrefix() if node is None else SchemaJsonPrefix(node, top_level_object=True)
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
