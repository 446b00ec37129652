"""Incremental validation of JSON text, plain or against a JSON schema (pure Python).

`JsonPrefix` and `SchemaJsonPrefix` take text a few characters at a time and say
whether it can still become a valid document (`feed`, `accepts`), whether it is
one (`complete`), and what text would finish it (`closing_text`). The tool-call
guard (`guard.py`) runs a call's arguments through them while the engine decodes.
State is a tuple of immutables, so trying a candidate costs no copy.
"""

from __future__ import annotations

import json
import math
import re
from typing import Iterable

_WS = " \t\n\r"  # JSON whitespace; also what the tool-section grammar tolerates

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


class _Prefix:
    """What both validators share: a state that `_scan` advances or refuses."""

    _state: tuple

    def _scan(self, text: str) -> tuple | None:
        raise NotImplementedError

    def feed(self, text: str) -> bool:
        """Append `text`; False (state unchanged) if it would break the prefix."""
        state = self._scan(text)
        if state is None:
            return False
        self._state = state
        return True

    def accepts(self, text: str) -> bool:
        return self._scan(text) is not None


class JsonPrefix(_Prefix):
    """Incremental validator of one JSON value's text (RFC 8259), char by char."""

    __slots__ = ("top_level_object", "_state")

    def __init__(self, top_level_object: bool = True):
        self.top_level_object = top_level_object
        self._state: _State = ("", _VALUE, None, False)

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
        state, stop = _scan_json(self._state, text, 0, self.top_level_object)
        return state if stop == len(text) else None


def _json_done(state: _State) -> bool:
    return not state[0] and (state[1] == _AFTER or state[1] in _NUMBER_DONE)


def _scan_json(state: _State, text: str, i: int, top_level_object: bool) -> tuple[_State, int]:
    """(state, stop): scans `text` from `i` and stops at the first char that would
    break the prefix; stop == len(text) when all of it was taken."""
    stack, mode, aux, in_key = state
    n = len(text)
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
                break  # a raw control character
            i += 1
            continue
        ch = text[i]
        if mode == _AFTER:
            if ch in _WS:
                pass
            elif not stack:
                break  # a second top-level value
            elif ch == ",":
                mode = _KEY if stack[-1] == "{" else _VALUE
            elif ch == ("}" if stack[-1] == "{" else "]"):
                stack = stack[:-1]
            else:
                break
        elif mode == _VALUE or mode == _ARRAY_FIRST:
            if ch in _WS:
                pass
            elif ch == "]" and mode == _ARRAY_FIRST:
                stack, mode = stack[:-1], _AFTER
            elif top_level_object and not stack and ch != "{":
                break
            else:
                started = _start_value(ch, stack)
                if started is None:
                    break
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
                break
        elif mode == _COLON:
            if ch == ":":
                mode, in_key = _VALUE, False
            elif ch not in _WS:
                break
        elif mode == _ESCAPE:
            if ch not in _ESCAPABLE:
                break
            mode, aux = (_HEX, 0) if ch == "u" else (_STRING, None)
        elif mode == _HEX:
            if ch not in _HEX_DIGITS:
                break
            aux += 1
            if aux == 4:
                mode, aux = _STRING, None
        elif mode == _LITERAL:
            if ch != aux[0]:
                break
            aux = aux[1:]
            if not aux:
                mode, aux = _AFTER, None
        else:
            step = _number_step(mode, ch)
            if step is None:
                break
            mode = step
            if mode == _AFTER:
                continue  # the number ended; `ch` belongs to what follows
        i += 1
    return (stack, mode, aux, in_key), i


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


# ------------------------------------------------------------- schema prefix
#
# The subset of JSON Schema that pydantic emits for tool parameters, checked as
# the text grows. Decisions, so that constrained decoding stays simple and never
# refuses a document the schema accepts (beyond the spellings noted):
# - `properties` without `additionalProperties` means the declared keys only
#   (pydantic's default is permissive; a model inventing keys is the failure we
#   guard against). `additionalProperties: true` or a schema, or no `properties`
#   at all, leaves the object's contents unchecked (generic JSON, required keys
#   included). A tool whose arguments schema checks nothing gets plain JsonPrefix.
# - Keys and enum strings are spelled as `json.dumps` writes them: no escapes a
#   plain character would do (`"\u0070ath"` is refused for `"path"`).
# - `integer` takes no fraction or exponent (`1.0`, `1e2` are refused).
# - Value bounds (minimum, maxLength, pattern, format, minItems, ...) are not
#   checked, only the type; the closing text does respect minimum,
#   exclusiveMinimum, maximum, minItems and minLength.
# - Keywords outside the subset (allOf of several, not, if/then, prefixItems,
#   patternProperties, oneOf branches that overlap, enums of non-strings, a $ref
#   cycle or one that does not resolve) make that sub-value generic JSON.
# - anyOf of several object schemas is checked as one object: the keys of all
#   branches, each with its value's schema, closable once the keys every branch
#   requires are written. Keys of different branches may mix; a forced value
#   from nothing is the first branch's.

_OBJ, _ARR, _STR, _INT, _NUM, _BOOL, _NULL = 1, 2, 4, 8, 16, 32, 64
_ANY_TYPE = 127
_NUMERIC = _INT | _NUM
_TYPE_BITS = {"object": _OBJ, "array": _ARR, "string": _STR, "integer": _INT, "number": _NUM,
              "boolean": _BOOL, "null": _NULL}
_IGNORED = frozenset((  # annotations, and bounds we do not check
    "title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "format",
    "$schema", "$id", "$anchor", "$defs", "definitions", "contentEncoding", "contentMediaType",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength",
    "pattern", "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties"))
_UNSUPPORTED = frozenset(("not", "if", "then", "else", "patternProperties", "propertyNames", "dependentRequired",
                          "dependentSchemas", "dependencies", "prefixItems", "contains", "minContains",
                          "maxContains", "unevaluatedProperties", "unevaluatedItems", "additionalItems",
                          "$dynamicRef", "$recursiveRef"))

_KEYSTR = 18   # inside a key; aux = the key's text so far
_ENUM = 19     # inside an enum string; aux = its text so far
_GENERIC = 20  # an unchecked value; aux = a JsonPrefix state


class SchemaNode:
    """One compiled (sub)schema. `types` is a bit set; the other fields describe
    the object, array, string and number cases that `types` allows."""

    __slots__ = ("types", "free", "props", "names", "required", "key_prefixes", "items", "min_items",
                 "enum", "enum_prefixes", "min_length", "integer_only", "number_text", "_filler")

    def __init__(self, types: int):
        self.types = types
        self.free = True  # an object's contents are unchecked
        self.props: dict[str, SchemaNode] = {}  # key as spelled in JSON -> its schema
        self.names: tuple[str, ...] = ()  # declared order
        self.required: frozenset[str] = frozenset()
        self.key_prefixes: dict[str, tuple[str, ...]] = {}
        self.items: SchemaNode | None = None  # set when `types` allows arrays
        self.min_items = 0
        self.enum: tuple[str, ...] | None = None  # spelled in JSON, without quotes
        self.enum_prefixes: frozenset[str] = frozenset()
        self.min_length = 0
        self.integer_only = False
        self.number_text = "0"
        self._filler: str | None = None

    def set_props(self, props: dict[str, SchemaNode], required: Iterable[str]) -> None:
        self.props, self.names, self.required = props, tuple(props), frozenset(required)
        prefixes: dict[str, list[str]] = {}
        for name in self.names:
            for k in range(1, len(name) + 1):
                prefixes.setdefault(name[:k], []).append(name)
        self.key_prefixes = {p: tuple(names) for p, names in prefixes.items()}

    def set_enum(self, spelled: tuple[str, ...] | None) -> None:
        self.enum = spelled
        self.enum_prefixes = frozenset(s[:k] for s in spelled or () for k in range(1, len(s) + 1))

    def filler(self) -> str:
        """The shortest-to-think-of valid value: null, false, 0, "", [], {} with required keys."""
        if self._filler is None:
            t = self.types
            if t & _NULL:
                text = "null"
            elif t & _BOOL:
                text = "false"
            elif t & _NUMERIC:
                text = self.number_text
            elif t & _STR:
                text = '"' + (self.enum[0] if self.enum else "x" * self.min_length) + '"'
            elif t & _ARR:
                text = "[" + ",".join([self.items.filler()] * self.min_items) + "]"
            else:
                text = "{" + ",".join(f'"{k}":{self.props[k].filler()}'
                                      for k in self.names if k in self.required) + "}"
            self._filler = text
        return self._filler


ANY = SchemaNode(_ANY_TYPE)  # any JSON value; its arrays hold ANY, its objects are free
ANY.items = ANY


def _spell(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _number_text(schema: dict, integer: bool) -> str:
    """A number inside the schema's bounds, 0 when they allow it."""
    def bound(key: str) -> float | None:
        value = schema.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    lo, hi = bound("minimum"), bound("maximum")
    xlo, xhi = bound("exclusiveMinimum"), bound("exclusiveMaximum")
    value: float = 0
    if lo is not None and value < lo:
        value = math.ceil(lo) if integer else lo
    if xlo is not None and value <= xlo:
        value = math.floor(xlo) + 1
    if hi is not None and value > hi:
        value = math.floor(hi) if integer else hi
    if xhi is not None and value >= xhi:
        value = math.ceil(xhi) - 1
    if not integer and (xlo is not None or lo is not None) and (xhi is not None or hi is not None):
        low = xlo if xlo is not None else lo
        high = xhi if xhi is not None else hi
        inside = (xlo is None or value > xlo) and (xhi is None or value < xhi)
        if not inside and low < high:  # an open interval that shuts out the integers tried above
            value = (low + high) / 2
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value)


class _Compiler:
    def __init__(self, root: object):
        self.root = root

    def resolve(self, ref: object) -> object | None:
        if not isinstance(ref, str) or not ref.startswith("#"):
            return None
        node = self.root
        for part in ref[1:].split("/")[1:] if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def compile(self, schema: object, refs: frozenset[str] = frozenset()) -> SchemaNode:
        if not isinstance(schema, dict) or not schema.keys().isdisjoint(_UNSUPPORTED):
            return ANY  # True, {}-like, or something outside the subset
        rest = schema.keys() - _IGNORED
        if "$ref" in schema:
            ref, target = schema["$ref"], self.resolve(schema["$ref"])
            if rest != {"$ref"} or target is None or ref in refs:
                return ANY
            return self.compile(target, refs | {ref})
        if "allOf" in schema:
            parts = schema["allOf"]
            if rest != {"allOf"} or not isinstance(parts, list) or len(parts) != 1:
                return ANY
            return self.compile(parts[0], refs)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                branches = schema[key]
                if rest != {key} or not isinstance(branches, list) or not branches:
                    return ANY
                return _union([self.compile(b, refs) for b in branches], exclusive=key == "oneOf")
        return self.compile_typed(schema, refs)

    def compile_typed(self, schema: dict, refs: frozenset[str]) -> SchemaNode:
        declared = schema.get("type")
        if declared is None:
            types = _ANY_TYPE
        else:
            names = [declared] if isinstance(declared, str) else declared
            if not isinstance(names, list) or not all(isinstance(n, str) and n in _TYPE_BITS for n in names):
                return ANY
            types = 0
            for name in names:
                types |= _TYPE_BITS[name]
        if schema.get("nullable") is True:
            types |= _NULL
        enum = None
        if "enum" in schema or "const" in schema:
            values = schema["enum"] if "enum" in schema else [schema["const"]]
            if not isinstance(values, list) or not all(v is None or isinstance(v, str) for v in values):
                return ANY
            strings = tuple(dict.fromkeys(_spell(v) for v in values if v is not None))
            types &= (_STR if strings else 0) | (_NULL if None in values else 0)
            enum = strings
        if not types:
            return ANY  # nothing can match; never refuse on our own account
        node = SchemaNode(types)
        node.set_enum(enum)
        node.integer_only = bool(types & _INT) and not types & _NUM
        if types & _NUMERIC:
            node.number_text = _number_text(schema, node.integer_only)
        min_length, min_items = schema.get("minLength"), schema.get("minItems")
        node.min_length = min_length if isinstance(min_length, int) and min_length > 0 else 0
        node.min_items = min_items if isinstance(min_items, int) and min_items > 0 else 0
        if types & _ARR:
            items = schema.get("items")
            node.items = self.compile(items, refs) if isinstance(items, dict) else ANY
        if types & _OBJ:
            self.fill_object(node, schema, refs)
        return node

    def fill_object(self, node: SchemaNode, schema: dict, refs: frozenset[str]) -> None:
        declared = schema.get("properties")
        additional = schema.get("additionalProperties")
        required = [r for r in schema.get("required", ()) if isinstance(r, str)]
        if not isinstance(declared, dict):
            declared = {}
        node.free = "properties" not in schema and additional is not False or additional not in (None, False)
        props = {_spell(k): self.compile(v, refs) for k, v in declared.items() if v is not False}
        for name in required:
            props.setdefault(_spell(name), ANY)  # required but undeclared: any value
        node.set_props(props, (_spell(r) for r in required))


def _union(branches: list[SchemaNode], exclusive: bool) -> SchemaNode:
    """anyOf (or oneOf, whose branches must not share a type) of compiled nodes."""
    out = SchemaNode(0)
    first_object = None
    for b in branches:
        shared = out.types & b.types
        if shared & _NUMERIC:
            shared |= _NUMERIC
        if exclusive and (shared or b is ANY):
            return ANY
        if b.types & _OBJ:
            if out.types & _OBJ:
                _merge_objects(out, b)
            else:
                out.free, out.props, out.names = b.free, b.props, b.names
                out.required, out.key_prefixes = b.required, b.key_prefixes
                first_object = b
        if b.types & _ARR:
            out.items = ANY if out.types & _ARR and out.items is not b.items else b.items
            out.min_items = b.min_items if not out.types & _ARR else min(out.min_items, b.min_items)
        if b.types & _STR:
            if not out.types & _STR:
                out.set_enum(b.enum)
                out.min_length = b.min_length
            elif out.enum is None or b.enum is None:
                out.set_enum(None)
            else:
                out.set_enum(tuple(dict.fromkeys(out.enum + b.enum)))
        if b.types & _NUMERIC and not out.types & _NUMERIC:
            out.number_text = b.number_text
        out.types |= b.types
    out.integer_only = bool(out.types & _INT) and not out.types & _NUM
    if first_object is not None and out.types == _OBJ:
        out._filler = first_object.filler()  # the merged required keys may satisfy no branch
    return out


def _merge_objects(out: SchemaNode, b: SchemaNode) -> None:
    """Objects of either branch, checked as one: the keys any branch declares (a key two
    declare takes either's values), closable once the keys every branch requires are there.
    Looser than the union (keys of different branches may mix), never stricter."""
    props = dict(out.props)
    for name, node in b.props.items():
        props[name] = _union([props[name], node], exclusive=False) if name in props else node
    out.free = out.free or b.free
    out.set_props(props, out.required & b.required)


def compile_schema(schema: object) -> SchemaNode:
    """A JSON schema (dict) compiled for SchemaJsonPrefix; never raises."""
    return _Compiler(schema).compile(schema)


# Scanner state: (frames, mode, aux, node). frames is a tuple of open containers,
# ("{", object node, keys seen) or ("[", array node, items started); node is the
# schema of the value being read. All immutable, so copying a state is free.


class SchemaJsonPrefix(_Prefix):
    """Like JsonPrefix, but the value must also fit a JSON schema (see above for
    the subset); every prefix it accepts can still be completed to a valid value."""

    __slots__ = ("top_level_object", "node", "_state")

    def __init__(self, schema: dict | SchemaNode, top_level_object: bool = False):
        node = schema if isinstance(schema, SchemaNode) else compile_schema(schema)
        if top_level_object and not node.types & _OBJ:
            node = ANY  # no object fits: the schema cannot help, plain JSON rules
        self.node = node
        self.top_level_object = top_level_object
        self._state: tuple = ((), _VALUE, None, self.node)

    @property
    def complete(self) -> bool:
        frames, mode, aux, _ = self._state
        if frames:
            return False
        return mode == _AFTER or mode in _NUMBER_DONE or (mode == _GENERIC and _json_done(aux))

    def copy(self) -> "SchemaJsonPrefix":
        clone = SchemaJsonPrefix(self.node, self.top_level_object)
        clone._state = self._state
        return clone

    def closing_text(self) -> str:
        """Short text that, fed next, makes the value complete and schema-valid."""
        frames, mode, aux, node = self._state
        frames = list(frames)
        if mode == _STRING:
            head = '"'
        elif mode == _ESCAPE:
            head = '""'  # `\"` is an escaped quote, then the real one
        elif mode == _HEX:
            head = "0" * (4 - aux) + '"'
        elif mode == _ENUM:
            head = next(s for s in node.enum if s.startswith(aux))[len(aux):] + '"'
        elif mode == _LITERAL:
            head = aux
        elif mode in (_NUM_MINUS, _NUM_DOT, _NUM_E, _NUM_ESIGN):
            head = "0"
        elif mode == _VALUE:
            if not frames and self.top_level_object:
                object_only = SchemaNode(_OBJ)
                object_only.props, object_only.names, object_only.required = node.props, node.names, node.required
                head = object_only.filler()
            else:
                head = node.filler()
        elif mode == _COLON:
            head = ":" + node.filler()
        elif mode == _KEYSTR or mode == _KEY:
            _, owner, seen = frames[-1]
            fits = [k for k in owner.names if k.startswith(aux or "") and k not in seen]
            name = next((k for k in fits if k in owner.required), fits[0])
            head = ("" if mode == _KEYSTR else '"') + name[len(aux or ""):] + '":' + owner.props[name].filler()
            frames[-1] = ("{", owner, seen | {name})
        elif mode == _GENERIC:
            inner = JsonPrefix(top_level_object=False)
            inner._state = aux
            head = inner.closing_text()
        else:  # _AFTER, _ARRAY_FIRST, _OBJECT_FIRST, finished numbers
            head = ""
        parts = [head]
        for kind, owner, data in reversed(frames):
            if kind == "{":
                count = len(data)
                for name in owner.names:
                    if name in owner.required and name not in data:
                        parts.append(("," if count else "") + f'"{name}":' + owner.props[name].filler())
                        count += 1
                parts.append("}")
            else:
                for k in range(data, owner.min_items):
                    parts.append(("," if k else "") + owner.items.filler())
                parts.append("]")
        return "".join(parts)

    def _scan(self, text: str) -> tuple | None:
        """The state after `text`, or None if `text` breaks the prefix."""
        frames, mode, aux, node = self._state
        i, n = 0, len(text)
        while i < n:
            if mode == _STRING:
                run = _STRING_RUN.match(text, i)
                if run:
                    i = run.end()
                    continue
                ch = text[i]
                if ch == '"':
                    mode = _AFTER
                elif ch == "\\":
                    mode = _ESCAPE
                else:
                    return None  # a raw control character
                i += 1
                continue
            if mode == _GENERIC:
                aux, i = _scan_json(aux, text, i, False)
                if i < n:  # the unchecked value ended (or broke); the rest is ours
                    if not _json_done(aux):
                        return None
                    mode, aux = _AFTER, None
                continue
            ch = text[i]
            if mode == _AFTER:
                if ch in _WS:
                    pass
                elif not frames:
                    return None  # a second top-level value
                else:
                    kind, owner, data = frames[-1]
                    if kind == "{":
                        if ch == "," and len(data) < len(owner.names):
                            mode = _KEY
                        elif ch == "}" and owner.required <= data:
                            frames = frames[:-1]
                        else:
                            return None
                    elif ch == ",":
                        frames = frames[:-1] + (("[", owner, data + 1),)
                        mode, node = _VALUE, owner.items
                    elif ch == "]":
                        frames = frames[:-1]
                    else:
                        return None
            elif mode == _KEYSTR:
                _, owner, seen = frames[-1]
                grown = aux + ch
                fits = owner.key_prefixes.get(grown)
                if fits is not None and not seen.issuperset(fits):
                    aux = grown
                elif ch == '"' and aux in owner.props and aux not in seen:
                    frames = frames[:-1] + (("{", owner, seen | {aux}),)
                    mode, aux, node = _COLON, None, owner.props[aux]
                else:
                    return None
            elif mode == _ENUM:
                grown = aux + ch
                if grown in node.enum_prefixes:
                    aux = grown
                elif ch == '"' and aux in node.enum:
                    mode, aux = _AFTER, None
                else:
                    return None
            elif mode == _VALUE or mode == _ARRAY_FIRST:
                if ch in _WS:
                    pass
                elif mode == _ARRAY_FIRST and ch == "]":
                    frames, mode = frames[:-1], _AFTER
                else:
                    if mode == _ARRAY_FIRST:
                        owner = frames[-1][1]
                        frames, node = frames[:-1] + (("[", owner, 1),), owner.items
                    elif self.top_level_object and not frames and ch != "{":
                        return None
                    started = _start_typed(ch, node, frames)
                    if started is None:
                        return None
                    frames, mode, aux = started
                    if mode == _GENERIC:
                        continue  # the generic scanner takes `ch` itself
            elif mode == _OBJECT_FIRST or mode == _KEY:
                if ch in _WS:
                    pass
                elif ch == '"' and len(frames[-1][2]) < len(frames[-1][1].names):
                    mode, aux = _KEYSTR, ""
                elif ch == "}" and mode == _OBJECT_FIRST and not frames[-1][1].required:
                    frames, mode = frames[:-1], _AFTER
                else:
                    return None
            elif mode == _COLON:
                if ch == ":":
                    mode = _VALUE
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
                step = _number_step(mode, ch)
                if step is None or (node.integer_only and (step == _NUM_DOT or step == _NUM_E)):
                    return None
                mode = step
                if mode == _AFTER:
                    continue  # the number ended; `ch` belongs to what follows
            i += 1
        return frames, mode, aux, node


def _start_typed(ch: str, node: SchemaNode, frames: tuple) -> tuple[tuple, int, object] | None:
    """(frames, mode, aux) once `ch` opens a value `node` allows, or None."""
    types = node.types
    if ch == '"':
        if not types & _STR:
            return None
        return (frames, _ENUM, "") if node.enum is not None else (frames, _STRING, None)
    if ch in _DIGITS or ch == "-":
        if not types & _NUMERIC:
            return None
        return frames, (_NUM_MINUS if ch == "-" else _NUM_ZERO if ch == "0" else _NUM_INT), None
    if ch == "{" and types & _OBJ:
        if node.free:
            return frames, _GENERIC, ("", _VALUE, None, False)
        return frames + (("{", node, frozenset()),), _OBJECT_FIRST, None
    if ch == "[" and types & _ARR:
        return frames + (("[", node, 0),), _ARRAY_FIRST, None
    rest = _LITERAL_REST.get(ch)
    if rest is not None and types & (_NULL if ch == "n" else _BOOL):
        return frames, _LITERAL, rest
    return None
