import os
from pathlib import Path

import pytest

from kimicode.tools.base import ToolContext
from kimicode.tools.search import Glob, Grep, ListDir, format_size, glob_regex
from kimicode.workspace import Workspace


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(Workspace(tmp_path))


def make(tmp_path: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make(
        tmp_path,
        {
            ".gitignore": "build/\n*.log\n",
            "README.md": "# demo\nTODO: write docs\n",
            "src/app.py": "import os\n\ndef main():\n    # TODO: args\n    return os.getcwd()\n",
            "src/util/strings.py": "def shout(s):\n    return s.upper()\n",
            "src/web/index.ts": "export const todo = 1;\n",
            "build/out.py": "# TODO generated\n",
            "debug.log": "TODO in a log\n",
            "logo.png": b"\x89PNG\0\0TODO",
        },
    )
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main # TODO\n")
    return tmp_path


# glob


@pytest.mark.parametrize(
    "pattern, path, matches",
    [
        ("*.py", "a.py", True),
        ("*.py", "src/a.py", False),
        ("**/*.py", "a.py", True),
        ("**/*.py", "src/deep/a.py", True),
        ("src/**", "src/deep/a.py", True),
        ("src/**/test_*.py", "src/test_a.py", True),
        ("*.{ts,tsx}", "a.tsx", True),
        ("*.{ts,tsx}", "a.js", False),
        ("file[0-9].txt", "file7.txt", True),
        ("file[!0-9].txt", "file7.txt", False),
        ("?.md", "a.md", True),
        ("a+b(c).txt", "a+b(c).txt", True),
    ],
)
def test_glob_regex(pattern, path, matches):
    assert bool(glob_regex(pattern).match(path)) is matches


async def test_glob_newest_first_and_respects_gitignore(ctx, project):
    os.utime(project / "src/app.py", (1_000, 1_000))
    os.utime(project / "src/util/strings.py", (2_000, 2_000))
    result = await Glob()({"pattern": "**/*.py"}, ctx)
    assert result.output.splitlines() == ["src/util/strings.py", "src/app.py"]


async def test_glob_under_a_path_returns_workspace_relative_paths(ctx, project):
    result = await Glob()({"pattern": "*.py", "path": "src/util"}, ctx)
    assert result.output == "src/util/strings.py"


async def test_glob_caps_results_and_says_how_many_more(ctx, tmp_path):
    make(tmp_path, {f"f{n:03}.txt": "" for n in range(230)})
    result = await Glob()({"pattern": "*.txt"}, ctx)
    lines = result.output.splitlines()
    assert len(lines) == 201 and "30 more files" in lines[-1]


async def test_glob_no_match_is_not_an_error(ctx, project):
    result = await Glob()({"pattern": "**/*.rs"}, ctx)
    assert not result.is_error and "No files match" in result.output


async def test_glob_bad_path_and_bad_pattern(ctx, project):
    assert (await Glob()({"pattern": "*", "path": "README.md"}, ctx)).is_error
    assert (await Glob()({"pattern": "*", "path": "../"}, ctx)).is_error
    result = await Glob()({"pattern": "{a,b"}, ctx)
    assert result.is_error and "invalid glob" in result.output


# grep


async def grep(ctx, pattern, **kw):
    return await Grep()({"pattern": pattern, **kw}, ctx)


async def test_grep_content_skips_ignored_binary_and_git(ctx, project):
    result = await grep(ctx, "TODO")
    assert result.output.splitlines() == ["README.md:2:TODO: write docs", "src/app.py:4:    # TODO: args"]


async def test_grep_ignore_case_and_glob_filter(ctx, project):
    result = await grep(ctx, "todo", ignore_case=True, glob="*.ts")
    assert result.output == "src/web/index.ts:1:export const todo = 1;"
    result = await grep(ctx, "def", glob="src/util/*.py")
    assert result.output == "src/util/strings.py:1:def shout(s):"


async def test_grep_context_lines(ctx, project):
    result = await grep(ctx, "def main", path="src", context=1)
    assert result.output.splitlines() == ["src/app.py-2-", "src/app.py:3:def main():", "src/app.py-4-    # TODO: args"]


async def test_grep_context_groups_are_separated(ctx, tmp_path):
    make(tmp_path, {"a.txt": "hit\n2\n3\n4\n5\nhit\n"})
    result = await grep(ctx, "hit", context=1)
    assert result.output.splitlines() == ["a.txt:1:hit", "a.txt-2-2", "--", "a.txt-5-5", "a.txt:6:hit"]


async def test_grep_without_context_has_no_separators(ctx, tmp_path):
    make(tmp_path, {"a.txt": "hit\n2\nhit\n"})
    assert (await grep(ctx, "hit")).output.splitlines() == ["a.txt:1:hit", "a.txt:3:hit"]


async def test_grep_output_modes(ctx, project):
    files = await grep(ctx, "TODO", output_mode="files_with_matches")
    assert files.output.splitlines() == ["README.md", "src/app.py"]
    counts = await grep(ctx, "o", output_mode="count", path="src/app.py")
    assert counts.output == "src/app.py:2"


async def test_grep_caps_results_with_a_note(ctx, tmp_path):
    make(tmp_path, {"many.txt": "match\n" * 50})
    result = await grep(ctx, "match", max_results=10)
    lines = result.output.splitlines()
    assert len(lines) == 11 and "stopped after 10 matching lines" in lines[-1]


async def test_grep_cuts_long_lines(ctx, tmp_path):
    make(tmp_path, {"wide.txt": "needle" + "x" * 1000 + "\n"})
    result = await grep(ctx, "needle")
    assert len(result.output) < 400 and "line cut" in result.output


async def test_grep_skips_large_files_and_says_so(ctx, tmp_path):
    make(tmp_path, {"huge.txt": "needle\n" + "x" * (2 * 1024 * 1024), "small.txt": "needle\n"})
    result = await grep(ctx, "needle")
    assert result.output.splitlines() == ["small.txt:1:needle", "[skipped 1 file over 2 MB]"]


async def test_grep_invalid_regex_reports_the_re_error(ctx, project):
    result = await grep(ctx, "foo(")
    assert result.is_error and "invalid regular expression" in result.output and "missing )" in result.output


async def test_grep_no_match_and_missing_path(ctx, project):
    result = await grep(ctx, "nothing-like-this")
    assert not result.is_error and "No matches" in result.output
    assert (await grep(ctx, "x", path="missing")).is_error


async def test_grep_does_not_follow_symlinks_out_of_the_workspace(ctx, tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("secret needle\n")
    (tmp_path / "link.txt").symlink_to(outside)
    result = await grep(ctx, "needle")
    assert "secret" not in result.output


async def test_grep_skips_fifos(ctx, tmp_path):
    os.mkfifo(tmp_path / "pipe")
    make(tmp_path, {"a.txt": "needle\n"})
    assert (await grep(ctx, "needle")).output == "a.txt:1:needle"


# list_dir


async def test_list_dir_one_level(ctx, project):
    result = await ListDir()({}, ctx)
    assert result.output.splitlines() == [
        "./",
        "  src/",
        "  .gitignore  (13 B)",
        "  README.md  (24 B)",
        "  logo.png  (10 B)",
    ]


async def test_list_dir_deeper_and_of_a_subdirectory(ctx, project):
    result = await ListDir()({"path": "src", "depth": 2}, ctx)
    assert result.output.splitlines() == [
        "src/",
        "  util/",
        "    strings.py  (35 B)",
        "  web/",
        "    index.ts  (23 B)",
        "  app.py  (63 B)",
    ]


async def test_list_dir_shows_symlinks_and_empty_dirs(ctx, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to("empty")
    result = await ListDir()({"depth": 3}, ctx)
    assert result.output.splitlines() == ["./", "  empty/", "  link -> empty"]
    assert (await ListDir()({"path": "empty"}, ctx)).output == "empty/ is empty."


async def test_list_dir_caps_entries(ctx, tmp_path):
    make(tmp_path, {f"f{n:03}": "" for n in range(520)})
    lines = (await ListDir()({}, ctx)).output.splitlines()
    assert len(lines) == 502 and "20 more entries" in lines[-1]


async def test_list_dir_bad_input(ctx, project):
    assert (await ListDir()({"path": "README.md"}, ctx)).is_error
    assert (await ListDir()({"path": "/"}, ctx)).is_error
    assert (await ListDir()({"depth": 4}, ctx)).is_error


def test_format_size():
    assert [format_size(n) for n in (0, 1023, 1536, 5 * 1024**2, 3 * 1024**4)] == [
        "0 B",
        "1023 B",
        "1.5 KB",
        "5.0 MB",
        "3072.0 GB",
    ]


def test_titles():
    assert Glob().title(Glob.Params(pattern="**/*.py", path="src")) == "Glob **/*.py in src"
    assert Grep().title(Grep.Params(pattern="TODO")) == "Grep 'TODO'"
    assert ListDir().title(ListDir.Params()) == "List ."
