"""The workspace guard, directly and through the tools that rely on it."""

from pathlib import Path

import pytest

from kimicode.tools.base import ToolContext
from kimicode.tools.files import ReadFile, WriteFile
from kimicode.tools.search import ListDir
from kimicode.workspace import PathError, Workspace


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hi')\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("password\n")
    return secret


@pytest.fixture
def ws(root: Path) -> Workspace:
    return Workspace(root)


@pytest.mark.parametrize("path", ["../outside/secret.txt", "src/../../outside/secret.txt", "..", "", "a\0b"])
def test_relative_escapes_are_refused(ws, outside, path):
    with pytest.raises(PathError):
        ws.resolve(path)


def test_absolute_path_outside_is_refused(ws, outside):
    with pytest.raises(PathError, match="outside the workspace"):
        ws.resolve(str(outside / "secret.txt"))


def test_absolute_path_inside_is_allowed(ws, root):
    assert ws.resolve(str(root / "src" / "app.py")) == root / "src" / "app.py"


def test_dotdot_that_stays_inside_is_allowed(ws, root):
    assert ws.resolve("src/../src/app.py") == root / "src" / "app.py"


def test_symlinked_file_pointing_outside_is_refused(ws, root, outside):
    (root / "link.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(PathError, match="through a symlink"):
        ws.resolve("link.txt")


def test_symlinked_dir_pointing_outside_is_refused(ws, root, outside):
    (root / "linkdir").symlink_to(outside)
    with pytest.raises(PathError):
        ws.resolve("linkdir")
    # A parent directory that is such a link: for reading, and for creating a new file.
    with pytest.raises(PathError):
        ws.resolve("linkdir/secret.txt")
    with pytest.raises(PathError):
        ws.resolve("linkdir/new.txt", for_write=True)


def test_symlinked_parent_dir_inside_is_allowed(ws, root):
    (root / "alias").symlink_to(root / "src")
    assert ws.resolve("alias/app.py") == root / "src" / "app.py"


@pytest.mark.parametrize(
    "path",
    [".git/config", ".git/hooks/pre-commit", ".git", ".GIT/hooks/pre-commit", "vendor/lib/.git/hooks/post-merge",
     ".kimicode/config.toml", "sub/.kimicode/permissions.json"],
)
def test_writes_into_git_are_refused_reads_are_not(ws, path):
    with pytest.raises(PathError, match=r"(?i)\.git|\.kimicode"):
        ws.resolve(path, for_write=True)
    ws.resolve(path)


def test_git_lookalikes_are_writable(ws, root):
    assert ws.resolve(".gitignore", for_write=True) == root / ".gitignore"
    assert ws.resolve(".github/workflows/ci.yml", for_write=True) == root / ".github/workflows/ci.yml"


def test_relative_paths_use_forward_slashes(ws, root):
    assert ws.relative(root / "src" / "app.py") == "src/app.py"
    assert ws.relative(root) == "."


# Through the tools: the guard turns into an error result, and nothing leaks or changes.


async def test_tools_refuse_escapes_without_touching_anything(ws, root, outside):
    ctx = ToolContext(ws)
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linkdir").symlink_to(outside)
    for arguments in ({"path": "link.txt"}, {"path": "../outside/secret.txt"}, {"path": "linkdir/secret.txt"}):
        result = await ReadFile()(arguments, ctx)
        assert result.is_error and "password" not in result.output
    for path in ("link.txt", "linkdir/new.txt", str(outside / "new.txt")):
        result = await WriteFile()({"path": path, "content": "pwned"}, ctx)
        assert result.is_error and "outside the workspace" in result.output
    assert (await ListDir()({"path": "linkdir"}, ctx)).is_error
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "password\n"


async def test_write_into_git_is_refused(ws, root):
    ctx = ToolContext(ws)
    result = await WriteFile()({"path": ".git/hooks/post-checkout", "content": "#!/bin/sh\nrm -rf ~\n"}, ctx)
    assert result.is_error and ".git" in result.output
    assert not (root / ".git" / "hooks").exists()


def test_a_workspace_inside_a_repository_honours_the_ignore_files_above_it(tmp_path):
    top = tmp_path / "mono"
    (top / ".git" / "info").mkdir(parents=True)
    (top / ".git" / "info" / "exclude").write_text("*.secret\n")
    (top / ".gitignore").write_text("node_modules/\nfrontend/dist/\n")
    front = top / "frontend"
    for rel in ("src/app.js", "node_modules/lib/index.js", "dist/bundle.js", "keys.secret", "sub/.gitignore"):
        (front / rel).parent.mkdir(parents=True, exist_ok=True)
        (front / rel).write_text("x")
    (front / "sub" / ".gitignore").write_text("*.tmp\n")
    (front / "sub" / "a.tmp").write_text("x")
    (front / "sub" / "b.js").write_text("x")
    ws = Workspace(front)
    files = sorted(ws.relative(p) for p in ws.iter_files())
    assert files == ["src/app.js", "sub/.gitignore", "sub/b.js"]
    assert sorted(ws.relative(p) for p in ws.iter_files(front / "sub")) == ["sub/.gitignore", "sub/b.js"]
