"""Turn one source file into `FileTags` with tree-sitter tags queries."""

from __future__ import annotations

import threading

from tree_sitter import Node, Parser, QueryCursor

from kimicode.index import languages
from kimicode.index.model import FileTags, Tag

_SIGNATURE_MAX = 200
# Definitions whose direct member functions are methods.
_CLASS_LIKE = frozenset({"class", "interface", "enum", "struct"})
# A type alias names a type; definitions inside it (C's `typedef struct s {...} t`)
# belong to the inner type, not the alias.
_NOT_SCOPES = frozenset({"type"})

# Parsers are not thread-safe; keep one per thread and language.
_local = threading.local()


def extract(path: str, source: bytes) -> FileTags:
    """Tags of `source`; never raises (a failure yields no tags)."""
    language = languages.language_for(path)
    if language is None:
        return FileTags(path, None, ())
    try:
        tags = _extract(language, source)
    except Exception:  # a bad file must never stop indexing the rest
        tags = ()
    return FileTags(path, language, tags)


def _parser(language: str) -> Parser:
    parsers = _local.__dict__.setdefault("parsers", {})
    if language not in parsers:
        parsers[language] = Parser(languages.get(language)[0])
    return parsers[language]


def _extract(language: str, source: bytes) -> tuple[Tag, ...]:
    query = languages.get(language)[1]
    tree = _parser(language).parse(source)
    defs, refs, scopes = _collect(QueryCursor(query).matches(tree.root_node))
    enclosing = _enclosing_all([found[1] for found in defs.values()], scopes)
    tags = {_definition(source, *found, enclosing) for found in defs.values()}
    def_names = set(defs)
    for key, (name, category) in refs.items():
        if key not in def_names:  # e.g. Go's generic type_identifier pattern on a type's own name
            line = name.start_point[0] + 1
            tags.add(Tag("ref", _text(name), category, line, line))
    # Only plain values leave this function: the tree and its nodes are released here.
    return tuple(sorted(tags, key=lambda t: (t.line, t.kind, t.name, t.category, t.scope)))


def _collect(matches):
    """Split query matches into definitions, references and scope-only nodes.

    Several patterns may tag the same name node (a stock pattern and a more
    specific one of ours); the one listed first in the query wins.
    """
    defs: dict[tuple[int, int], tuple] = {}  # name span -> (name, def node, receiver, category)
    refs: dict[tuple[int, int], tuple] = {}  # name span -> (name, category)
    scopes: dict[int, tuple[str, str, int, int]] = {}  # node id -> (name, category, start, end byte)
    winners: dict[tuple[str, tuple[int, int]], int] = {}
    for pattern, captures in matches:
        if "scope" in captures:
            scope = captures["scope"][0]
            scopes[scope.id] = (_text(captures["scope.name"][0]), "class", scope.start_byte, scope.end_byte)
            continue
        names = captures.get("name")
        role = next((c for c in captures if c.startswith(("definition.", "reference."))), None)
        if not names or role is None:
            continue
        name = names[0]
        kind, category = role.split(".", 1)
        key = (kind, _span(name))
        if winners.get(key, pattern + 1) <= pattern:
            continue
        winners[key] = pattern
        if kind == "definition":
            receiver = captures.get("receiver")
            defs[key[1]] = (name, captures[role][0], receiver[0] if receiver else None, category)
        else:
            refs[key[1]] = (name, category)
    for name, node, _, category in defs.values():
        if category not in _NOT_SCOPES:
            scopes[node.id] = (_text(name), category, node.start_byte, node.end_byte)
    return defs, refs, scopes


def _definition(source: bytes, name: Node, node: Node, receiver: Node | None, category: str, enclosing) -> Tag:
    outer = list(enclosing[node.id])
    if receiver is not None:
        outer.append((_text(receiver), "class"))
    # Stock queries often tag methods as functions (Python, C++ in-class bodies).
    if category == "function" and outer and outer[-1][1] in _CLASS_LIKE:
        category = "method"
    return Tag(
        "def",
        _text(name),
        category,
        node.start_point[0] + 1,
        _end_line(node),
        _first_line(source, node.start_byte),
        ".".join(n for n, _ in outer),
    )


def _enclosing_all(nodes: list[Node], scopes) -> dict[int, list[tuple[str, str]]]:
    """(name, category) of the scopes around each node, outermost first, in one sweep over
    the nested byte ranges. Walking `Node.parent` instead costs O(depth) per step, which
    made deeply nested files (minified or generated code) take minutes."""
    events = [(start, -end, 1, node_id, (name, category)) for node_id, (name, category, start, end) in scopes.items()]
    events += [(node.start_byte, -node.end_byte, 0, node.id, None) for node in nodes]  # a def before its own scope
    events.sort(key=lambda e: e[:3])
    stack: list[tuple[int, tuple[str, str]]] = []  # (end byte, scope) of the scopes open here
    result: dict[int, list[tuple[str, str]]] = {}
    for start, negative_end, is_scope, node_id, scope in events:
        while stack and stack[-1][0] <= start:
            stack.pop()
        if is_scope:
            stack.append((-negative_end, scope))
        else:
            result[node_id] = [s for end, s in stack if end >= -negative_end]
    return result


def _end_line(node: Node) -> int:
    row, column = node.end_point
    # Nodes that swallow their trailing newline (C's #define) end at column 0.
    return row if column == 0 and row > node.start_point[0] else row + 1


def _first_line(source: bytes, offset: int) -> str:
    """The definition's line, or on a long line (minified code) the text from the
    definition on: decoding is bounded either way."""
    start = source.rfind(b"\n", 0, offset) + 1
    if offset - start > _SIGNATURE_MAX:
        start = offset
    end = source.find(b"\n", offset, offset + _SIGNATURE_MAX * 4)
    line = source[start : end if end >= 0 else offset + _SIGNATURE_MAX * 4]
    return line.decode("utf-8", "replace").strip()[:_SIGNATURE_MAX]


def _span(node: Node) -> tuple[int, int]:
    return node.start_byte, node.end_byte


def _text(node: Node) -> str:
    return node.text.decode("utf-8", "replace")
