"""Search tools: glob, grep and list_dir. All of them skip what .gitignore ignores.

Walking a large tree is blocking work, so glob and grep run it in a thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from kimicode.tools.base import Params, Tool, ToolContext, ToolError, ToolResult
from kimicode.tools.files import cut_line, is_binary, plural, split_lines
from kimicode.workspace import PathError, Workspace

MAX_GLOB_RESULTS = 200
MAX_GREP_FILE_BYTES = 2 * 1024 * 1024
MAX_GREP_LINE_CHARS = 300
MAX_LIST_ENTRIES = 500


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob matched against a whole relative path: `*` and `?` stay
    inside one path segment, `**` spans segments, `[abc]` and `{a,b}` work as in bash."""
    out: list[str] = []
    i, braces = 0, 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (close := pattern.find("]", i + 2)) != -1:
            members = pattern[i + 1 : close]
            negate = members[:1] in ("!", "^")
            members = members[negate:].replace("\\", "\\\\").replace("[", "\\[")  # keep ranges like a-z
            out.append(("[^/" if negate else "[") + members + "]")
            i = close
        elif char == "{":
            braces += 1
            out.append("(?:")
        elif char == "," and braces:
            out.append("|")
        elif char == "}" and braces:
            braces -= 1
            out.append(")")
        else:
            out.append(re.escape(char))
        i += 1
    try:
        return re.compile("".join(out) + r"\Z")
    except re.error:
        raise ToolError(f"invalid glob pattern {pattern!r} (unbalanced braces?)") from None


def _resolve_dir(ctx: ToolContext, path: str) -> tuple[Path, str]:
    real = ctx.workspace.resolve(path)
    rel = ctx.workspace.relative(real)
    if not real.is_dir():
        raise ToolError(f"{rel} is not a directory" if real.exists() else f"{rel} does not exist")
    return real, rel


def _inside(workspace: Workspace, path: Path) -> bool:
    """False for a symlink that leads out of the workspace: its content is off limits."""
    try:
        workspace.resolve(str(path))
    except PathError:
        return False
    return True


# glob


class GlobParams(Params):
    pattern: str = Field(
        description='Glob matched against paths relative to `path`, e.g. "**/*.py", "src/**/test_*.{ts,tsx}".'
    )
    path: str = Field(default=".", description="Directory to search in, relative to the workspace root.")


class Glob(Tool[GlobParams]):
    """Find files by name pattern, newest first.

    `*` matches within one directory level and `**` across levels, so "*.py" finds
    Python files directly in `path` and "**/*.py" finds them at any depth. Files
    ignored by .gitignore are skipped. Returns at most 200 paths. To search file
    contents use grep.
    """

    name = "glob"
    kind = "search"
    Params = GlobParams

    def title(self, params: GlobParams) -> str:
        return f"Glob {params.pattern}" + ("" if params.path == "." else f" in {params.path}")

    async def run(self, params: GlobParams, ctx: ToolContext) -> ToolResult:
        base, rel = _resolve_dir(ctx, params.path)
        regex = glob_regex(params.pattern.removeprefix("./"))
        matches = await asyncio.to_thread(_newest_first, ctx.workspace, base, regex)
        if not matches:
            return ToolResult(f"No files match {params.pattern} in {rel}.")
        shown = [ctx.workspace.relative(path) for path in matches[:MAX_GLOB_RESULTS]]
        if len(matches) > MAX_GLOB_RESULTS:
            shown.append(f"[{len(matches) - MAX_GLOB_RESULTS} more files not shown; narrow the pattern or path]")
        return ToolResult("\n".join(shown))


def _newest_first(workspace: Workspace, base: Path, regex: re.Pattern[str]) -> list[Path]:
    found = []
    for path in workspace.iter_files(base):
        if regex.match(path.relative_to(base).as_posix()):
            try:
                found.append((path.stat().st_mtime, path))
            except OSError:  # a dangling symlink
                found.append((0.0, path))
    found.sort(key=lambda item: item[0], reverse=True)
    return [path for _, path in found]


# grep


class GrepParams(Params):
    pattern: str = Field(description="Python regular expression, matched against each line.")
    path: str = Field(default=".", description="File or directory to search, relative to the workspace root.")
    glob: str | None = Field(
        default=None,
        description='Only search files matching this glob, e.g. "*.py" (without "/" it matches file names '
        'at any depth) or "src/**/*.ts".',
    )
    ignore_case: bool = Field(default=False, description="Match case-insensitively.")
    context: int = Field(default=0, ge=0, le=20, description="Lines of context to show around each match.")
    output_mode: Literal["content", "files_with_matches", "count"] = Field(
        default="content",
        description='"content": matching lines as path:line:text; "files_with_matches": only the paths; '
        '"count": path:number of matching lines.',
    )
    max_results: int = Field(
        default=200, ge=1, le=2000, description="Stop after this many matching lines (or files, for the other modes)."
    )


class Grep(Tool[GrepParams]):
    """Search file contents with a regular expression (Python `re` syntax), line by line.

    Skips files ignored by .gitignore, binary files and files over 2 MB. Content
    results look like `path:line:text` (context lines as `path-line-text`); long
    lines are cut at 300 characters. Use output_mode "files_with_matches" to find
    where something is used, then read_file. To find files by name use glob.
    """

    name = "grep"
    kind = "search"
    Params = GrepParams

    def title(self, params: GrepParams) -> str:
        return f"Grep {params.pattern!r}" + ("" if params.path == "." else f" in {params.path}")

    async def run(self, params: GrepParams, ctx: ToolContext) -> ToolResult:
        try:
            regex = re.compile(params.pattern, re.IGNORECASE if params.ignore_case else 0)
        except re.error as exc:
            raise ToolError(f"invalid regular expression {params.pattern!r}: {exc}") from None
        base = ctx.workspace.resolve(params.path)
        rel = ctx.workspace.relative(base)
        if not base.exists():
            raise ToolError(f"{rel} does not exist")
        wanted = _glob_filter(params.glob) if params.glob else lambda path: True
        report = await asyncio.to_thread(_grep, ctx.workspace, base, regex, wanted, params)
        return ToolResult(report or f"No matches for {params.pattern!r} in {rel}.")


def _glob_filter(pattern: str) -> Callable[[str], bool]:
    """Like ripgrep's --glob: without a "/" the pattern matches file names at any depth."""
    pattern = pattern.removeprefix("./")
    regex = glob_regex(pattern)
    if "/" in pattern:
        return lambda rel: regex.match(rel) is not None
    return lambda rel: regex.match(rel.rsplit("/", 1)[-1]) is not None


def _grep(
    workspace: Workspace, base: Path, regex: re.Pattern[str], wanted: Callable[[str], bool], params: GrepParams
) -> str:
    out: list[str] = []
    budget = params.max_results
    too_large = 0
    searching_dir = base.is_dir()
    for path in workspace.iter_files(base):
        if not wanted(path.relative_to(base).as_posix() if searching_dir else path.name):
            continue
        size = _regular_file_size(path)
        if size is None or not _inside(workspace, path):
            continue
        if size > MAX_GREP_FILE_BYTES:
            too_large += 1
            continue
        lines = _text_lines(path)
        if lines is None:
            continue
        hits = [i for i, line in enumerate(lines) if regex.search(line)]
        if not hits:
            continue
        rel = workspace.relative(path)
        if params.output_mode == "content":
            hits = hits[:budget]
            budget -= len(hits)
            if out and params.context:
                out.append("--")
            out.extend(_content_lines(rel, lines, hits, params.context))
        else:
            budget -= 1
            out.append(f"{rel}:{len(hits)}" if params.output_mode == "count" else rel)
        if budget <= 0:
            unit = "matching lines" if params.output_mode == "content" else "files"
            out.append(f"[stopped after {params.max_results} {unit}; narrow the search or raise max_results]")
            break
    if too_large:
        out.append(f"[skipped {plural(too_large, 'file')} over 2 MB]")
    return "\n".join(out)


def _regular_file_size(path: Path) -> int | None:
    """None for fifos, sockets and dangling links: reading a fifo would block forever."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _text_lines(path: Path) -> list[str] | None:
    """The file's lines, or None for a binary or unreadable file."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if is_binary(data):
        return None
    return split_lines(data.decode("utf-8", errors="replace"))


def _content_lines(rel: str, lines: list[str], hits: list[int], context: int) -> Iterator[str]:
    """ripgrep-style: `path:n:text` for matches, `path-n-text` for context, `--` between groups."""
    matched = set(hits)
    shown = sorted({i for hit in hits for i in range(max(0, hit - context), min(len(lines), hit + context + 1))})
    previous = None
    for i in shown:
        if context and previous is not None and i > previous + 1:
            yield "--"
        sep = ":" if i in matched else "-"
        yield f"{rel}{sep}{i + 1}{sep}{cut_line(lines[i], MAX_GREP_LINE_CHARS)}"
        previous = i


# list_dir


class ListDirParams(Params):
    path: str = Field(default=".", description="Directory to list, relative to the workspace root.")
    depth: int = Field(default=1, ge=1, le=3, description="How many levels to show (1-3).")


class ListDir(Tool[ListDirParams]):
    """List a directory as an indented tree: subdirectories end with "/", files show
    their size, symlinks their target.

    Entries ignored by .gitignore (and .git itself) are left out. Shows up to 3 levels
    (`depth`) and at most 500 entries. To find files by pattern use glob.
    """

    name = "list_dir"
    kind = "read"
    Params = ListDirParams

    def title(self, params: ListDirParams) -> str:
        return f"List {params.path}"

    async def run(self, params: ListDirParams, ctx: ToolContext) -> ToolResult:
        base, rel = _resolve_dir(ctx, params.path)
        tree = _collect_tree(ctx.workspace, base, params.depth)
        entries = list(_render_tree(tree, base, level=0))
        if not entries:
            return ToolResult(f"{rel}/ is empty.")
        shown = entries[:MAX_LIST_ENTRIES]
        if len(entries) > MAX_LIST_ENTRIES:
            shown.append(
                f"[{len(entries) - MAX_LIST_ENTRIES} more entries not shown; list a subdirectory or lower depth]"
            )
        return ToolResult(f"{rel}/\n" + "\n".join(shown))


Tree = dict[Path, tuple[list[str], list[str]]]


def _collect_tree(workspace: Workspace, base: Path, depth: int) -> Tree:
    tree: Tree = {}
    for directory, dirs, files in workspace.walk(base):
        tree[directory] = (list(dirs), files)
        if len(directory.relative_to(base).parts) + 1 >= depth:
            dirs.clear()  # as with os.walk, emptying `dirs` stops the walk descending
    return tree


def _render_tree(tree: Tree, directory: Path, level: int) -> Iterator[str]:
    indent = "  " * (level + 1)
    dirs, files = tree[directory]
    for name in dirs:
        yield f"{indent}{name}/"
        if directory / name in tree:
            yield from _render_tree(tree, directory / name, level + 1)
    for name in files:
        yield indent + _describe_file(directory / name)


def _describe_file(path: Path) -> str:
    try:
        if path.is_symlink():
            return f"{path.name} -> {os.readlink(path)}"
        return f"{path.name}  ({format_size(path.stat().st_size)})"
    except OSError:
        return path.name


def format_size(size: float) -> str:
    if size < 1024:
        return f"{int(size)} B"
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            break
    return f"{size:.1f} {unit}"
