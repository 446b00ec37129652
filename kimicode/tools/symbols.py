"""Symbol tools on the repository index: find definitions, find references, the repo map.

Each call first brings the index up to date (only changed files are parsed again).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field

from kimicode.tools.base import Params, Tool, ToolContext, ToolError, ToolResult
from kimicode.workspace import PathError

MAX_DEFINITIONS = 50
MAX_REFERENCES = 200
MAX_FUZZY_NAMES = 20


async def _index(ctx: ToolContext) -> Any:
    if ctx.index is None:
        raise ToolError("the repository index is not available here; use grep instead")
    await asyncio.to_thread(ctx.index.update)
    return ctx.index


class FindSymbolParams(Params):
    name: str = Field(min_length=1, description="The symbol's name (class, function, method, type, constant).")
    fuzzy: bool = Field(
        default=False, description="Also match names that contain `name`, ignoring case (when unsure of the exact name)."
    )


class FindSymbol(Tool[FindSymbolParams]):
    """Find where a symbol is defined: file:line, its signature and enclosing scope.

    Faster and more precise than grep for definitions. Use fuzzy=true when you only
    know part of the name.
    """

    name = "find_symbol"
    kind = "search"
    Params = FindSymbolParams

    def title(self, params: FindSymbolParams) -> str:
        return f"Find symbol {params.name}" + (" (fuzzy)" if params.fuzzy else "")

    async def run(self, params: FindSymbolParams, ctx: ToolContext) -> ToolResult:
        store = (await _index(ctx)).store
        names = [params.name]
        if params.fuzzy:
            wanted = params.name.lower()
            matches = [n for n in store.symbol_names() if wanted in n.lower()]
            names = sorted(matches, key=lambda n: (not n.lower().startswith(wanted), len(n), n))[:MAX_FUZZY_NAMES]
        found = [hit for n in names for hit in store.definitions(n, limit=MAX_DEFINITIONS + 1)]
        more = len(found) > MAX_DEFINITIONS
        found = found[:MAX_DEFINITIONS]
        if not found:
            hint = "" if params.fuzzy else "; try fuzzy=true or grep"
            return ToolResult(f"no definition of {params.name!r} found{hint}")
        lines = []
        for path, tag in found:
            scope = f"  (in {tag.scope})" if tag.scope else ""
            lines.append(f"{path}:{tag.line}: {tag.signature or f'{tag.category} {tag.name}'}{scope}")
        if more:
            lines.append(f"[more than {MAX_DEFINITIONS} definitions; narrow it down with grep or a path]")
        return ToolResult("\n".join(lines))


class FindReferencesParams(Params):
    name: str = Field(min_length=1, description="The exact symbol name whose uses to find.")


class FindReferences(Tool[FindReferencesParams]):
    """Find where a symbol is used (calls, type uses), as file:line with the line's text.

    Use it before renaming or changing a function's signature to see every caller.
    """

    name = "find_references"
    kind = "search"
    Params = FindReferencesParams

    def title(self, params: FindReferencesParams) -> str:
        return f"Find references to {params.name}"

    async def run(self, params: FindReferencesParams, ctx: ToolContext) -> ToolResult:
        index = await _index(ctx)
        hits = index.store.references(params.name, limit=MAX_REFERENCES + 1)
        if not hits:
            return ToolResult(f"no references to {params.name!r} found (the index knows calls and type uses; grep finds text)")
        lines = [f"{path}:{tag.line}: {_source_line(ctx, path, tag.line)}" for path, tag in hits[:MAX_REFERENCES]]
        if len(hits) > MAX_REFERENCES:
            lines.append(f"[more than {MAX_REFERENCES} references; narrow the search with grep]")
        return ToolResult("\n".join(lines))


class RepoMapParams(Params):
    focus: list[str] = Field(
        default_factory=list, description="Files (paths) or identifiers to centre the map on; empty: the whole repo."
    )
    tokens: int = Field(default=2_048, ge=256, le=16_384, description="Size budget of the map in tokens.")


class RepoMap(Tool[RepoMapParams]):
    """A map of the repository: its most important definitions (signature lines with
    file:line), ranked by how much the rest of the code uses them, within a token budget.

    Use it to get oriented, or with `focus` to see what surrounds given files or names.
    """

    name = "repo_map"
    kind = "read"
    Params = RepoMapParams

    def title(self, params: RepoMapParams) -> str:
        return "Repo map" + (f" around {', '.join(params.focus[:3])}" if params.focus else "")

    async def run(self, params: RepoMapParams, ctx: ToolContext) -> ToolResult:
        from kimicode.index.repomap import render_map

        index = await _index(ctx)
        files = index.store.file_tags()
        known = {f.path for f in files}
        focus_files = {item for item in params.focus if item in known}
        text = render_map(files, params.tokens, focus_files, set(params.focus) - focus_files)
        return ToolResult(text or "the index found no definitions in this repository")


def _source_line(ctx: ToolContext, path: str, line: int) -> str:
    try:
        with ctx.workspace.resolve(path).open(encoding="utf-8", errors="replace") as f:
            for number, text in enumerate(f, 1):
                if number == line:
                    return text.strip()[:200]
    except (OSError, PathError):
        pass
    return ""
