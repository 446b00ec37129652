"""What the index holds: one `Tag` per definition or reference found in a file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TagKind = Literal["def", "ref"]


@dataclass(frozen=True, slots=True)
class Tag:
    kind: TagKind
    name: str  # the identifier, e.g. "parse_config"
    category: str  # class | function | method | interface | type | module | constant | call | ...
    line: int  # 1-based first line of the node the tag names (the whole definition for defs)
    end_line: int  # 1-based last line (== line for references)
    signature: str = ""  # defs: the definition's first line, stripped, at most ~200 chars
    scope: str = ""  # defs: the enclosing definitions, dotted (e.g. "Config" for a method Config.load)


@dataclass(frozen=True, slots=True)
class FileTags:
    path: str  # workspace-relative, forward slashes
    language: str | None  # None: a file we list but cannot parse
    tags: tuple[Tag, ...]
