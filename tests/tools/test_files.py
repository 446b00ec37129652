import os
from pathlib import Path

import pytest

from kimicode.tools.base import ToolContext
from kimicode.tools.files import EditFile, MultiEdit, ReadFile, WriteFile
from kimicode.workspace import Workspace


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(Workspace(tmp_path))


async def read(ctx, path, **kw):
    return await ReadFile()({"path": path, **kw}, ctx)


async def write(ctx, path, content):
    return await WriteFile()({"path": path, "content": content}, ctx)


async def edit(ctx, path, old, new, **kw):
    return await EditFile()({"path": path, "old_string": old, "new_string": new, **kw}, ctx)


async def multi(ctx, path, *edits):
    arguments = {"path": path, "edits": [{"old_string": old, "new_string": new} for old, new in edits]}
    return await MultiEdit()(arguments, ctx)


def make(tmp_path: Path, rel: str, content: str | bytes) -> Path:
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# read_file


async def test_read_numbers_lines_like_cat_n(ctx, tmp_path):
    make(tmp_path, "a.py", "one\ntwo\n")
    result = await read(ctx, "a.py")
    assert not result.is_error
    assert result.output == "     1\tone\n     2\ttwo"


async def test_read_offset_and_limit_say_how_to_continue(ctx, tmp_path):
    make(tmp_path, "a.txt", "".join(f"line {n}\n" for n in range(1, 11)))
    result = await read(ctx, "a.txt", offset=3, limit=2)
    assert result.output.splitlines()[:2] == ["     3\tline 3", "     4\tline 4"]
    assert "lines 3-4 of 10" in result.output and "offset=5" in result.output


async def test_read_offset_past_end_is_an_error(ctx, tmp_path):
    make(tmp_path, "a.txt", "x\n")
    result = await read(ctx, "a.txt", offset=5)
    assert result.is_error and "past the end" in result.output and "1 line" in result.output


async def test_read_cuts_long_lines(ctx, tmp_path):
    make(tmp_path, "min.js", "x" * 5000)
    result = await read(ctx, "min.js")
    assert "line cut, 5000 chars" in result.output
    assert len(result.output) < 2100


async def test_read_caps_total_output_and_points_at_the_next_offset(ctx, tmp_path):
    make(tmp_path, "big.txt", "".join("y" * 1000 + "\n" for _ in range(500)))
    result = await read(ctx, "big.txt")
    assert len(result.output) < 110_000
    last_shown = int(result.output.split("\t")[-2].split()[-1])
    assert f"offset={last_shown + 1}" in result.output and "output size limit" in result.output


async def test_read_crlf_file_shows_no_carriage_returns(ctx, tmp_path):
    make(tmp_path, "win.txt", "a\r\nb\r\n")
    assert (await read(ctx, "win.txt")).output == "     1\ta\n     2\tb"


async def test_read_binary_file_is_refused(ctx, tmp_path):
    make(tmp_path, "img.png", b"\x89PNG\0\0\x01" + bytes(100))
    result = await read(ctx, "img.png")
    assert result.is_error and "binary file, 107 bytes" in result.output


async def test_read_invalid_utf8_is_shown_with_a_note(ctx, tmp_path):
    make(tmp_path, "latin.txt", "café\n".encode("latin-1"))
    result = await read(ctx, "latin.txt")
    assert not result.is_error
    assert "not valid UTF-8" in result.output and "caf\ufffd" in result.output


async def test_read_empty_file_says_so(ctx, tmp_path):
    make(tmp_path, "empty.txt", "")
    result = await read(ctx, "empty.txt")
    assert not result.is_error and "empty" in result.output


async def test_read_directory_suggests_list_dir(ctx, tmp_path):
    (tmp_path / "src").mkdir()
    result = await read(ctx, "src")
    assert result.is_error and "list_dir" in result.output


async def test_read_missing_file_suggests_files_with_that_name(ctx, tmp_path):
    make(tmp_path, "pkg/app.py", "")
    make(tmp_path, "other/App.py", "")
    result = await read(ctx, "app.py")
    assert result.is_error and "does not exist" in result.output
    assert "pkg/app.py" in result.output and "other/App.py" in result.output


async def test_read_missing_file_without_namesakes(ctx):
    result = await read(ctx, "nowhere.py")
    assert result.is_error and "no file named nowhere.py" in result.output


async def test_read_records_the_file_as_seen(ctx, tmp_path):
    path = make(tmp_path, "a.txt", "x\n")
    await read(ctx, "a.txt")
    assert path in ctx.seen_files


async def test_read_rejects_bad_arguments(ctx, tmp_path):
    make(tmp_path, "a.txt", "x\n")
    result = await ReadFile()({"path": "a.txt", "offset": 0}, ctx)
    assert result.is_error and "offset" in result.output


# write_file


async def test_write_creates_file_and_parent_dirs(ctx, tmp_path):
    result = await write(ctx, "new/deep/file.txt", "a\nb\n")
    assert not result.is_error
    assert result.output == "Created new/deep/file.txt (2 lines)"
    assert (tmp_path / "new/deep/file.txt").read_text() == "a\nb\n"
    assert result.display["path"] == "new/deep/file.txt"
    assert "+++ b/new/deep/file.txt" in result.display["diff"]
    assert (tmp_path / "new/deep/file.txt") in ctx.changed_files


async def test_write_refuses_an_existing_file_not_read(ctx, tmp_path):
    path = make(tmp_path, "keep.txt", "precious\n")
    result = await write(ctx, "keep.txt", "clobbered\n")
    assert result.is_error and "read it with read_file first" in result.output
    assert path.read_text() == "precious\n"


async def test_write_refuses_a_file_changed_since_it_was_read(ctx, tmp_path):
    path = make(tmp_path, "a.txt", "v1\n")
    await read(ctx, "a.txt")
    path.write_text("user edit\n")
    result = await write(ctx, "a.txt", "agent\n")
    assert result.is_error and "changed on disk" in result.output
    assert path.read_text() == "user edit\n"


async def test_write_after_read_overwrites_with_a_diff(ctx, tmp_path):
    path = make(tmp_path, "a.txt", "old\n")
    await read(ctx, "a.txt")
    result = await write(ctx, "a.txt", "new\n")
    assert result.output == "Overwrote a.txt (1 line)"
    assert path.read_text() == "new\n"
    diff = result.display["diff"]
    assert "--- a/a.txt" in diff and "-old" in diff and "+new" in diff


async def test_write_twice_needs_no_read_in_between(ctx, tmp_path):
    await write(ctx, "a.txt", "one\n")
    result = await write(ctx, "a.txt", "two\n")
    assert not result.is_error and (tmp_path / "a.txt").read_text() == "two\n"


async def test_write_keeps_mode_and_leaves_no_temp_files(ctx, tmp_path):
    path = make(tmp_path, "run.sh", "#!/bin/sh\n")
    path.chmod(0o750)
    await read(ctx, "run.sh")
    await write(ctx, "run.sh", "#!/bin/sh\necho hi\n")
    assert path.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.sh"]


async def test_write_to_a_directory_is_refused(ctx, tmp_path):
    (tmp_path / "d").mkdir()
    result = await write(ctx, "d", "x")
    assert result.is_error and "directory" in result.output


async def test_write_below_a_file_reports_the_os_error(ctx, tmp_path):
    make(tmp_path, "plain", "x")
    result = await write(ctx, "plain/child.txt", "x")
    assert result.is_error and "plain" in result.output


async def test_diff_marks_a_missing_final_newline(ctx, tmp_path):
    result = await write(ctx, "a.txt", "no newline")
    assert result.display["diff"].endswith("+no newline\n\\ No newline at end of file\n")


# edit_file


@pytest.fixture
async def source(ctx, tmp_path) -> Path:
    path = make(tmp_path, "app.py", "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n")
    await read(ctx, "app.py")
    return path


async def test_edit_replaces_once_and_shows_the_changed_region(ctx, source):
    result = await edit(ctx, "app.py", "return a - b", "return a - b  # checked")
    assert not result.is_error
    assert source.read_text().endswith("    return a - b  # checked\n")
    assert result.output.startswith("Edited app.py: 1 replacement.")
    assert "     6\t    return a - b  # checked" in result.output
    assert "+    return a - b  # checked" in result.display["diff"]
    assert source in ctx.changed_files


async def test_edit_twice_in_a_row_needs_no_reread(ctx, source):
    await edit(ctx, "app.py", "def add", "def plus")
    result = await edit(ctx, "app.py", "def sub", "def minus")
    assert not result.is_error


async def test_edit_not_found_hints_the_closest_line(ctx, source):
    before = source.read_bytes()
    result = await edit(ctx, "app.py", "  return a+b", "return 0")
    assert result.is_error and "not found" in result.output and "indentation" in result.output
    assert "     2\t    return a + b" in result.output
    assert source.read_bytes() == before


async def test_edit_not_found_without_anything_close(ctx, source):
    result = await edit(ctx, "app.py", "zzzzqqqq", "x")
    assert result.is_error and "most similar" not in result.output


async def test_edit_ambiguous_lists_count_and_lines(ctx, source):
    before = source.read_bytes()
    result = await edit(ctx, "app.py", "(a, b):", "(a, b, c):")
    assert result.is_error and "2 times" in result.output and "lines 1, 5" in result.output
    assert "replace_all" in result.output
    assert source.read_bytes() == before


async def test_edit_replace_all(ctx, source):
    result = await edit(ctx, "app.py", "(a, b)", "(x, y)", replace_all=True)
    assert "2 replacements" in result.output
    assert source.read_text().count("(x, y)") == 2


async def test_edit_identical_strings_is_an_error(ctx, source):
    result = await edit(ctx, "app.py", "def add", "def add")
    assert result.is_error and "identical" in result.output


async def test_edit_empty_old_string_on_non_empty_file_is_an_error(ctx, source):
    before = source.read_bytes()
    result = await edit(ctx, "app.py", "", "x = 1\n")
    assert result.is_error and "write_file" in result.output
    assert source.read_bytes() == before


async def test_edit_empty_old_string_fills_an_empty_file(ctx, tmp_path):
    path = make(tmp_path, "empty.py", "")
    await read(ctx, "empty.py")
    result = await edit(ctx, "empty.py", "", "x = 1\n")
    assert not result.is_error and path.read_text() == "x = 1\n"


async def test_edit_requires_a_read_first(ctx, tmp_path):
    path = make(tmp_path, "a.txt", "alpha\n")
    result = await edit(ctx, "a.txt", "alpha", "beta")
    assert result.is_error and "read_file" in result.output
    assert path.read_text() == "alpha\n"


async def test_edit_refuses_a_file_changed_since_read(ctx, source):
    source.write_text(source.read_text() + "# user\n")
    result = await edit(ctx, "app.py", "def add", "def plus")
    assert result.is_error and "changed on disk" in result.output
    assert "def add" in source.read_text()


async def test_edit_missing_file(ctx):
    result = await edit(ctx, "ghost.py", "a", "b")
    assert result.is_error and "does not exist" in result.output


async def test_edit_crlf_file_accepts_lf_strings_and_keeps_crlf(ctx, tmp_path):
    path = make(tmp_path, "win.txt", "one\r\ntwo\r\nthree\r\n")
    await read(ctx, "win.txt")
    result = await edit(ctx, "win.txt", "one\ntwo\n", "uno\ndos\n")
    assert not result.is_error
    assert path.read_bytes() == b"uno\r\ndos\r\nthree\r\n"


async def test_edit_keeps_mode(ctx, source):
    source.chmod(0o700)
    await read(ctx, "app.py")
    await edit(ctx, "app.py", "def add", "def plus")
    assert source.stat().st_mode & 0o777 == 0o700


async def test_edit_binary_and_non_utf8_files_are_refused_untouched(ctx, tmp_path):
    for name, data in [("bin.dat", b"ab\0cd"), ("latin.txt", "café".encode("latin-1"))]:
        path = make(tmp_path, name, data)
        await read(ctx, name)
        result = await edit(ctx, name, "a", "b")
        assert result.is_error
        assert path.read_bytes() == data


# multi_edit


async def test_multi_edit_applies_in_order(ctx, source):
    result = await multi(ctx, "app.py", ("def add", "def plus"), ("def plus(a, b)", "def plus(x, y)"))
    assert not result.is_error and "2 replacements" in result.output
    assert source.read_text().startswith("def plus(x, y):\n")


async def test_multi_edit_failure_names_the_edit_and_writes_nothing(ctx, source):
    before, stamp = source.read_bytes(), os.stat(source).st_mtime_ns
    result = await multi(ctx, "app.py", ("def add", "def plus"), ("not there", "x"), ("def sub", "def minus"))
    assert result.is_error and "edit 2 of 3 failed" in result.output and "no edit was made" in result.output
    assert source.read_bytes() == before and os.stat(source).st_mtime_ns == stamp
    assert source not in ctx.changed_files


async def test_multi_edit_later_edit_sees_earlier_changes(ctx, source):
    before = source.read_bytes()
    result = await multi(ctx, "app.py", ("def add", "def plus"), ("def add", "def again"))
    assert result.is_error and "edit 2 of 2" in result.output and "in order" in result.output
    assert source.read_bytes() == before


async def test_multi_edit_needs_at_least_one_edit(ctx, source):
    result = await MultiEdit()({"path": "app.py", "edits": []}, ctx)
    assert result.is_error and "edits" in result.output


async def test_multi_edit_snippet_shows_each_region(ctx, tmp_path):
    path = make(tmp_path, "long.txt", "".join(f"line {n}\n" for n in range(1, 101)))
    await read(ctx, "long.txt")
    result = await multi(ctx, "long.txt", ("line 10\n", "ten\n"), ("line 90\n", "ninety\n"))
    assert "    10\tten" in result.output and "    90\tninety" in result.output
    assert "   ..." in result.output and "line 50" not in result.output
    assert path.read_text().count("\n") == 100


def test_titles():
    assert ReadFile().title(ReadFile.Params(path="a.py")) == "Read a.py"
    assert ReadFile().title(ReadFile.Params(path="a.py", offset=10, limit=31)) == "Read a.py:10-40"
    assert EditFile().title(EditFile.Params(path="a.py", old_string="x", new_string="y")) == "Edit a.py"
    params = MultiEdit.Params(path="a.py", edits=[{"old_string": "x", "new_string": "y"}] * 2)
    assert MultiEdit().title(params) == "Edit a.py (2 edits)"
