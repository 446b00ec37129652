"""Which tree-sitter grammar and tags query serve a file.

Grammar wheels are imported lazily: listing a workspace must not pay for
grammars it never needs. Each language's query is compiled once per process.
"""

from __future__ import annotations

import functools
import importlib
import posixpath
from importlib import resources

from tree_sitter import Language, Query

_EXTENSIONS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".hxx": "cpp",
    ".rb": "ruby",
}

# language -> (wheel module, language function)
_GRAMMARS = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "ruby": ("tree_sitter_ruby", "language"),
}

# language -> ordered parts of its query: "wheel:<module>" is that wheel's
# TAGS_QUERY, anything else a file in queries/. Earlier parts win when two
# patterns tag the same name (see extract.py), so our specific patterns come
# before the stock ones.
_QUERY_PARTS = {
    "python": ("python.scm", "wheel:tree_sitter_python"),
    "javascript": ("jsx.scm", "wheel:tree_sitter_javascript"),
    "typescript": ("typescript.scm", "wheel:tree_sitter_javascript", "type_refs.scm"),
    "tsx": ("jsx.scm", "typescript.scm", "wheel:tree_sitter_javascript", "type_refs.scm"),
    "go": ("go.scm", "wheel:tree_sitter_go"),  # the Go query ends with its own type refs
    "rust": ("rust.scm", "wheel:tree_sitter_rust", "type_refs.scm"),
    "java": ("java.scm", "wheel:tree_sitter_java", "type_refs.scm"),
    # The stock C/C++ queries tag only function declarators; ours replace them.
    "c": ("c.scm", "type_refs.scm"),
    "cpp": ("cpp.scm", "c.scm", "type_refs.scm"),
    "ruby": ("ruby.scm", "wheel:tree_sitter_ruby"),
}

LANGUAGES = frozenset(_GRAMMARS)


def language_for(path: str) -> str | None:
    """The language of `path` by its extension, or None if we don't parse it."""
    ext = posixpath.splitext(path)[1].lower()
    return _EXTENSIONS.get(ext)


@functools.cache
def get(language: str) -> tuple[Language, Query]:
    """The grammar and compiled tags query for `language` (a `language_for` value)."""
    module_name, function = _GRAMMARS[language]
    lang = Language(getattr(importlib.import_module(module_name), function)())
    query = Query(lang, "\n".join(_query_text(part) for part in _QUERY_PARTS[language]))
    _disable_unsupported(query)
    return lang, query


def _query_text(part: str) -> str:
    if part.startswith("wheel:"):
        return importlib.import_module(part.removeprefix("wheel:")).TAGS_QUERY
    return resources.files(__package__).joinpath("queries", part).read_text(encoding="utf-8")


def _disable_unsupported(query: Query) -> None:
    # `#is?`/`#is-not?` (e.g. Ruby's "not a local variable") are not evaluated
    # by py-tree-sitter; such patterns would tag every identifier.
    for index in range(query.pattern_count):
        if query.pattern_assertions(index):
            query.disable_pattern(index)
