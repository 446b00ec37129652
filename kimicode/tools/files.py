"""File tools: read_file, write_file, edit_file and multi_edit.

Writing is guarded: a file that already exists must have been read in this session
and be unchanged on disk since, so the agent never overwrites text it has not seen
(the user's own edits included). Writes are atomic: a temp file in the same
directory, fsynced, then renamed over the target.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

from pydantic import Field

from kimicode.tools.base import FileStamp, Params, Tool, ToolContext, ToolError, ToolResult

READ_LIMIT_LINES = 2000
MAX_LINE_CHARS = 2000
MAX_READ_CHARS = 100_000
BINARY_SNIFF_BYTES = 8192
MAX_SUGGESTIONS = 5
SNIPPET_CONTEXT_LINES = 2
MAX_SNIPPET_LINES = 40
MAX_LISTED_OCCURRENCES = 10


# Helpers shared by the file tools (and by search.py for reading text).


def numbered(n: int, line: str) -> str:
    """One line as `cat -n` shows it."""
    return f"{n:>6}\t{line}"


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def cut_line(line: str, limit: int) -> str:
    if len(line) <= limit:
        return line
    return f"{line[:limit]} … [line cut, {len(line)} chars in all]"


def split_lines(text: str) -> list[str]:
    """Lines without their endings. Splits on "\\n" only: str.splitlines also splits
    on form feeds and U+2028, which would make line numbers disagree with editors."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def is_binary(data: bytes) -> bool:
    return b"\0" in data[:BINARY_SNIFF_BYTES]


def unified_diff(rel: str, before: str | None, after: str) -> str:
    """A git-style diff; `before` is None for a new file."""
    lines = difflib.unified_diff(
        _lines_keeping_ends(before or ""),
        _lines_keeping_ends(after),
        "/dev/null" if before is None else f"a/{rel}",
        f"b/{rel}",
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def _lines_keeping_ends(text: str) -> list[str]:
    """Like str.splitlines(keepends=True), but splitting on "\\n" only (see split_lines)."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


@contextmanager
def os_errors_reported(rel: str) -> Iterator[None]:
    """Permission problems, full disks and the like become results the model can read."""
    try:
        yield
    except OSError as exc:
        raise ToolError(f"{rel}: {exc.strerror or exc}") from None


def require_regular_file(ctx: ToolContext, real: Path, rel: str) -> None:
    if real.is_file():
        return
    if real.is_dir():
        raise ToolError(f"{rel} is a directory; use list_dir to see what it contains")
    if real.exists():
        raise ToolError(f"{rel} is not a regular file")
    raise ToolError(_missing_file_message(ctx, real, rel))


def require_read_and_unchanged(ctx: ToolContext, real: Path, rel: str) -> None:
    """Refuse to modify a file the agent has not read, or that changed since it did."""
    seen = ctx.seen_files.get(real)
    if seen is None:
        raise ToolError(f"{rel} already exists and you have not read it yet; read it with read_file first")
    if seen != FileStamp.of(real):
        raise ToolError(
            f"{rel} changed on disk since you last read it (someone else edited it); read it again with read_file first"
        )


def _missing_file_message(ctx: ToolContext, real: Path, rel: str) -> str:
    name = real.name.lower()
    found = []
    for candidate in ctx.workspace.iter_files():
        if candidate.name.lower() == name:
            found.append(ctx.workspace.relative(candidate))
            if len(found) == MAX_SUGGESTIONS:
                break
    if not found:
        return f"{rel} does not exist (no file named {real.name} anywhere in the workspace; glob can search by pattern)"
    return f"{rel} does not exist. Files with that name: {', '.join(found)}"


PathArg = Annotated[str, Field(description="File path, relative to the workspace root (or absolute inside it).")]


# read_file


class ReadFileParams(Params):
    path: PathArg
    offset: int = Field(default=1, ge=1, description="First line to read (1-based).")
    limit: int = Field(default=READ_LIMIT_LINES, ge=1, description="Maximum number of lines to read.")


class ReadFile(Tool[ReadFileParams]):
    """Read a text file in the workspace.

    Lines come numbered like `cat -n` (number, tab, text); the numbers are not part
    of the file. Reads up to 2000 lines starting at `offset`; lines longer than 2000
    characters are cut, and output stops at about 100 KB with a note saying which
    offset to continue from. Binary files are refused.

    Read a file before changing it: write_file, edit_file and multi_edit refuse a
    file you have not read, or that changed on disk since you read it. To find files
    use glob or grep; to see a directory use list_dir.
    """

    name = "read_file"
    kind = "read"
    Params = ReadFileParams

    def title(self, params: ReadFileParams) -> str:
        if params.offset == 1 and params.limit == READ_LIMIT_LINES:
            return f"Read {params.path}"
        return f"Read {params.path}:{params.offset}-{params.offset + params.limit - 1}"

    async def run(self, params: ReadFileParams, ctx: ToolContext) -> ToolResult:
        real = ctx.workspace.resolve(params.path)
        rel = ctx.workspace.relative(real)
        with os_errors_reported(rel):
            require_regular_file(ctx, real, rel)
            data = await ctx.files.read_bytes(real)
            if is_binary(data):
                raise ToolError(f"{rel} is a binary file, {len(data)} bytes; read_file only shows text")
            ctx.note_seen(real)
        if not data:
            return ToolResult(f"{rel} is empty (0 bytes).")
        try:
            text, note = data.decode("utf-8"), ""
        except UnicodeDecodeError:
            text = data.decode("utf-8", errors="replace")
            note = f"[{rel} is not valid UTF-8; undecodable bytes are shown as \ufffd]\n"
        return ToolResult(note + _numbered_excerpt(rel, split_lines(text), params.offset, params.limit))


def _numbered_excerpt(rel: str, lines: list[str], offset: int, limit: int) -> str:
    if offset > len(lines):
        raise ToolError(f"offset {offset} is past the end of {rel}, which has {plural(len(lines), 'line')}")
    shown: list[str] = []
    size = 0
    for n in range(offset, min(len(lines), offset + limit - 1) + 1):
        text = numbered(n, cut_line(lines[n - 1], MAX_LINE_CHARS))
        if shown and size + len(text) > MAX_READ_CHARS:
            break
        shown.append(text)
        size += len(text) + 1
    last = offset + len(shown) - 1
    if last < len(lines):
        capped = " (output size limit reached)" if len(shown) < limit else ""
        shown.append(f"\n[lines {offset}-{last} of {len(lines)} shown{capped}; read on with offset={last + 1}]")
    return "\n".join(shown)


# write_file


class WriteFileParams(Params):
    path: PathArg
    content: str = Field(description="The complete new content of the file.")


class WriteFile(Tool[WriteFileParams]):
    """Create a file, or replace the whole content of one, with `content`.

    Missing parent directories are created. An existing file must have been read with
    read_file first and be unchanged since. To change part of a file, prefer
    edit_file or multi_edit: they send only the changed text.
    """

    name = "write_file"
    kind = "edit"
    Params = WriteFileParams

    def title(self, params: WriteFileParams) -> str:
        return f"Write {params.path}"

    async def run(self, params: WriteFileParams, ctx: ToolContext) -> ToolResult:
        real = ctx.workspace.resolve(params.path, for_write=True)
        rel = ctx.workspace.relative(real)
        with os_errors_reported(rel):
            before = None
            if real.exists():
                require_regular_file(ctx, real, rel)
                require_read_and_unchanged(ctx, real, rel)
                before = (await ctx.files.read_bytes(real)).decode("utf-8", errors="replace")
            await ctx.files.write_bytes(real, params.content.encode("utf-8"))
            ctx.note_written(real)
        verb = "Created" if before is None else "Overwrote"
        return ToolResult(
            f"{verb} {rel} ({plural(len(split_lines(params.content)), 'line')})",
            display={"diff": unified_diff(rel, before, params.content), "path": rel},
        )


# edit_file and multi_edit

OldString = Annotated[
    str,
    Field(
        description="The exact text to replace, whitespace and indentation included. "
        "It must occur exactly once in the file unless replace_all is true."
    ),
]
NewString = Annotated[str, Field(description="The text to put in its place; must differ from old_string.")]
ReplaceAll = Annotated[bool, Field(description="Replace every occurrence of old_string, not just one.")]


class Replacement(Params):
    old_string: OldString
    new_string: NewString
    replace_all: ReplaceAll = False


class EditFileParams(Params):
    path: PathArg
    old_string: OldString
    new_string: NewString
    replace_all: ReplaceAll = False


class MultiEditParams(Params):
    path: PathArg
    edits: list[Replacement] = Field(
        min_length=1, description="Edits applied in order, each to the result of the ones before it."
    )


class EditFile(Tool[EditFileParams]):
    """Replace exact text in a file: `old_string` becomes `new_string`.

    old_string must match the file exactly (whitespace and indentation included; do
    not include the line numbers read_file shows) and occur exactly once; add
    surrounding lines to make it unique, or set replace_all to change every
    occurrence. The file must have been read with read_file first and be unchanged
    since. For several changes to one file use multi_edit; to create a file use
    write_file.
    """

    name = "edit_file"
    kind = "edit"
    Params = EditFileParams

    def title(self, params: EditFileParams) -> str:
        return f"Edit {params.path}"

    async def run(self, params: EditFileParams, ctx: ToolContext) -> ToolResult:
        replacement = Replacement(
            old_string=params.old_string, new_string=params.new_string, replace_all=params.replace_all
        )
        return await apply_edits(ctx, params.path, [replacement])


class MultiEdit(Tool[MultiEditParams]):
    """Make several exact-text replacements in one file, all or nothing.

    Each edit works like edit_file and applies to the result of the edits before it.
    If any edit fails, none is applied and the error names the failing edit. The file
    must have been read with read_file first and be unchanged since.
    """

    name = "multi_edit"
    kind = "edit"
    Params = MultiEditParams

    def title(self, params: MultiEditParams) -> str:
        return f"Edit {params.path} ({len(params.edits)} edits)"

    async def run(self, params: MultiEditParams, ctx: ToolContext) -> ToolResult:
        return await apply_edits(ctx, params.path, params.edits)


async def apply_edits(ctx: ToolContext, path: str, replacements: list[Replacement]) -> ToolResult:
    real = ctx.workspace.resolve(path, for_write=True)
    rel = ctx.workspace.relative(real)
    with os_errors_reported(rel):
        require_regular_file(ctx, real, rel)
        require_read_and_unchanged(ctx, real, rel)
        before = _editable_text(await ctx.files.read_bytes(real), rel)
        if "\r\n" in before:
            replacements = [_with_crlf(r) for r in replacements]
        after, count = _apply_all(before, replacements, rel)
        await ctx.files.write_bytes(real, after.encode("utf-8"))
        ctx.note_written(real)
    return ToolResult(
        f"Edited {rel}: {plural(count, 'replacement')}.\n{_changed_snippet(before, after)}",
        display={"diff": unified_diff(rel, before, after), "path": rel},
    )


def _editable_text(data: bytes, rel: str) -> str:
    if is_binary(data):
        raise ToolError(f"{rel} is a binary file, {len(data)} bytes; it cannot be edited as text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Editing a lossy decoding would corrupt the bytes it could not decode.
        raise ToolError(f"{rel} is not valid UTF-8, so it cannot be edited safely as text") from None


def _with_crlf(replacement: Replacement) -> Replacement:
    """The model writes "\\n"; a CRLF file needs "\\r\\n" to match and to stay consistent."""
    return replacement.model_copy(
        update={"old_string": _to_crlf(replacement.old_string), "new_string": _to_crlf(replacement.new_string)}
    )


def _to_crlf(text: str) -> str:
    return re.sub(r"(?<!\r)\n", "\r\n", text)


def _apply_all(content: str, replacements: list[Replacement], rel: str) -> tuple[str, int]:
    """Apply in memory, in order; any failure aborts them all (nothing is written)."""
    total = 0
    for number, replacement in enumerate(replacements, 1):
        try:
            content, count = _apply(content, replacement, rel)
        except ToolError as exc:
            if len(replacements) == 1:
                raise
            order = " Edits apply in order, each to the text the ones before it left." if number > 1 else ""
            raise ToolError(f"edit {number} of {len(replacements)} failed; no edit was made.{order}\n{exc}") from None
        total += count
    return content, total


def _apply(content: str, replacement: Replacement, rel: str) -> tuple[str, int]:
    old, new = replacement.old_string, replacement.new_string
    if old == new:
        raise ToolError("old_string and new_string are identical; there is nothing to change")
    if not old:
        if content:
            raise ToolError(
                f"old_string is empty but {rel} is not; give the exact text to replace "
                "(to replace the whole file use write_file)"
            )
        return new, 1
    count = content.count(old)
    if count == 0:
        raise ToolError(_not_found_message(content, old, rel))
    if count > 1 and not replacement.replace_all:
        lines = _occurrence_lines(content, old)
        listed = ", ".join(map(str, lines[:MAX_LISTED_OCCURRENCES]))
        more = ", …" if len(lines) > MAX_LISTED_OCCURRENCES else ""
        raise ToolError(
            f"old_string occurs {count} times in {rel} (lines {listed}{more}); include more surrounding "
            "lines to make it unique, or set replace_all to replace every occurrence"
        )
    if replacement.replace_all:
        return content.replace(old, new), count
    return content.replace(old, new, 1), 1


def _occurrence_lines(content: str, old: str) -> list[int]:
    lines, start = [], 0
    while (pos := content.find(old, start)) != -1:
        lines.append(content.count("\n", 0, pos) + 1)
        start = pos + len(old)
    return lines


def _not_found_message(content: str, old: str, rel: str) -> str:
    message = (
        f"old_string was not found in {rel}. It must match the file exactly, including whitespace "
        "and indentation; read the file again to copy the current text."
    )
    first_line = next((line.strip() for line in old.split("\n") if line.strip()), "")
    closest = _most_similar_line(split_lines(content), first_line)
    if closest is not None:
        message += f"\nThe most similar line is:\n{numbered(*closest)}"
    return message


def _most_similar_line(lines: list[str], target: str, cutoff: float = 0.6) -> tuple[int, str] | None:
    if not target:
        return None
    matcher = difflib.SequenceMatcher(b=target)
    best, best_ratio = None, cutoff
    for n, line in enumerate(lines, 1):
        matcher.set_seq1(line.strip())
        # The cheap upper bounds skip most lines before the full comparison.
        if matcher.real_quick_ratio() > best_ratio and matcher.quick_ratio() > best_ratio:
            ratio = matcher.ratio()
            if ratio > best_ratio:
                best, best_ratio = (n, line), ratio
    return best


def _changed_snippet(before: str, after: str) -> str:
    """The new text around each changed region, numbered, for the model to check."""
    old_lines, new_lines = split_lines(before), split_lines(after)
    regions: list[tuple[int, int]] = []  # 0-based [start, end) in new_lines
    for tag, _, _, j1, j2 in difflib.SequenceMatcher(None, old_lines, new_lines).get_opcodes():
        if tag == "equal":
            continue
        start, end = max(0, j1 - SNIPPET_CONTEXT_LINES), min(len(new_lines), j2 + SNIPPET_CONTEXT_LINES)
        if regions and start <= regions[-1][1]:
            regions[-1] = (regions[-1][0], end)
        else:
            regions.append((start, end))
    shown: list[str] = []
    for start, end in regions:
        if shown:
            shown.append("   ...")
        shown.extend(numbered(i + 1, cut_line(new_lines[i], MAX_LINE_CHARS)) for i in range(start, end))
    if len(shown) > MAX_SNIPPET_LINES:
        shown = [*shown[:MAX_SNIPPET_LINES], "   ... (more changes; read the file to see them)"]
    return "\n".join(shown)
