"""RepoIndex + IndexStore against the real tree-sitter extractor on small repositories."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from kimicode.index import indexer
from kimicode.index.indexer import MAX_FILE_BYTES, RepoIndex
from kimicode.workspace import Workspace

SOURCES = {
    "app/main.py": (
        "import os\n\n\nclass Config:\n    def load(self):\n        return parse_config(os.environ)\n"
        "\n\ndef parse_config(env):\n    return dict(env)\n"
    ),
    "app/util.py": "def helper():\n    return parse_config({})\n",
    "web/ui.js": "function renderPage(root) {\n  return root.render();\n}\n",
    "web/api.ts": "export interface Client {\n  get(url: string): string;\n}\n",
    "cmd/main.go": "package main\n\nfunc Serve() {}\n",
    "README.md": "# demo\n",
    ".gitignore": "build/\n",
    "build/generated.py": "def generated():\n    pass\n",
}


def _write(path: Path, content: str | bytes) -> None:
    """Write and move the mtime forward, so that coarse clocks never hide an edit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = path.stat().st_mtime_ns if path.exists() else 0
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    stamp = max(path.stat().st_mtime_ns, previous + 1_000_000_000)
    os.utime(path, ns=(stamp, stamp))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for rel, text in SOURCES.items():
        _write(root / rel, text)
    return root


@pytest.fixture
def parsed_paths(monkeypatch) -> list[str]:
    """The paths the real extractor is called on (in-process updates only)."""
    calls: list[str] = []
    real = indexer.extract

    def spy(path: str, source: bytes):
        calls.append(path)
        return real(path, source)

    monkeypatch.setattr(indexer, "extract", spy)
    return calls


def _index(root: Path) -> RepoIndex:
    return RepoIndex(Workspace(root))


def _def_paths(index: RepoIndex, name: str) -> list[str]:
    return [path for path, _ in index.store.definitions(name)]


def test_cold_index_of_a_multi_language_repo(repo):
    index = _index(repo)
    stats = index.update()
    assert stats.parsed == 5
    assert stats.removed == 0
    assert stats.files == len(index.store.files())
    assert {"app/main.py", "README.md", ".gitignore"} <= set(index.store.files())
    assert stats.languages.get("python") == 2
    assert stats.defs > 0 and stats.refs > 0
    assert _def_paths(index, "parse_config") == ["app/main.py"]
    assert _def_paths(index, "renderPage") == ["web/ui.js"]
    assert _def_paths(index, "Serve") == ["cmd/main.go"]
    assert "app/util.py" in {path for path, _ in index.store.references("parse_config")}
    assert not index.changed_since_last_update()
    index.close()


def test_store_queries(repo):
    index = _index(repo)
    index.update()
    store = index.store
    (path, tag), = store.definitions("load")
    assert (path, tag.kind, tag.line, tag.scope) == ("app/main.py", "def", 5, "Config")
    assert {t.name for _, t in store.definitions("PARSE_", prefix=True)} == {"parse_config"}
    assert store.definitions("parse", prefix=False) == []
    assert store.definitions("%", prefix=True) == []  # LIKE wildcards are literal
    assert len(store.definitions(limit=2)) == 2
    names = store.symbol_names()
    assert names == sorted(set(names)) and {"Config", "helper", "renderPage"} <= set(names)
    by_path = {ft.path: ft for ft in store.file_tags()}
    assert by_path["README.md"].language is None and by_path["README.md"].tags == ()
    assert any(t.name == "helper" for t in by_path["app/util.py"].tags)
    assert store.stats()["files"] == len(by_path)
    index.close()


def test_warm_update_without_changes_parses_nothing(repo, parsed_paths):
    _index(repo).update()
    parsed_paths.clear()
    stats = _index(repo).update()  # a fresh RepoIndex: the state comes from the cache file
    assert (stats.parsed, stats.removed, parsed_paths) == (0, 0, [])
    assert _def_paths(_index(repo), "helper") == ["app/util.py"]


def test_touch_without_change_parses_nothing(repo, parsed_paths):
    index = _index(repo)
    index.update()
    parsed_paths.clear()
    target = repo / "app/util.py"
    os.utime(target, ns=(target.stat().st_mtime_ns + 5_000_000_000,) * 2)
    assert index.changed_since_last_update()
    stats = index.update()
    assert (stats.parsed, parsed_paths) == (0, [])
    assert index.store.files()["app/util.py"][0] == target.stat().st_mtime_ns
    assert not index.changed_since_last_update()


def test_editing_one_file_reparses_exactly_that_file(repo, parsed_paths):
    index = _index(repo)
    index.update()
    parsed_paths.clear()
    _write(repo / "app/util.py", "def helper_two():\n    pass\n")
    stats = index.update()
    assert (stats.parsed, parsed_paths) == (1, ["app/util.py"])
    assert _def_paths(index, "helper") == []
    assert _def_paths(index, "helper_two") == ["app/util.py"]


def test_deletion_and_rename(repo):
    index = _index(repo)
    index.update()
    (repo / "cmd/main.go").unlink()
    (repo / "app/util.py").rename(repo / "app/helpers.py")
    stats = index.update()
    assert (stats.parsed, stats.removed) == (1, 2)
    assert _def_paths(index, "Serve") == []
    assert _def_paths(index, "helper") == ["app/helpers.py"]
    assert not {"cmd/main.go", "app/util.py"} & set(index.store.files())


def test_gitignored_files_are_not_indexed(repo):
    index = _index(repo)
    index.update()
    assert "build/generated.py" not in index.store.files()
    assert _def_paths(index, "generated") == []
    assert not any(path.startswith(".kimicode/") for path in index.store.files())


def test_large_file_is_listed_but_not_parsed(repo, parsed_paths):
    line = "def big():\n    pass\n"
    _write(repo / "big.py", line * (MAX_FILE_BYTES // len(line) + 1))
    index = _index(repo)
    index.update()
    assert "big.py" in index.store.files()
    assert "big.py" not in parsed_paths
    assert _def_paths(index, "big") == []


def test_binary_and_non_utf8_files_do_not_crash(repo):
    _write(repo / "latin1.py", "# caf\xe9\ndef latin():\n    pass\n".encode("latin-1"))
    _write(repo / "garbage.py", bytes(range(256)) * 8)
    _write(repo / "image.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    index = _index(repo)
    stats = index.update()
    assert {"latin1.py", "garbage.py", "image.png"} <= set(index.store.files())
    assert stats.parsed == 7


def test_corrupt_cache_file_is_rebuilt(repo):
    index = _index(repo)
    index.update()
    index.close()
    cache = repo / ".kimicode/cache/index.sqlite"
    cache.write_bytes(b"this is not a database " * 200)
    index = _index(repo)
    stats = index.update()
    assert stats.parsed == 5
    assert _def_paths(index, "helper") == ["app/util.py"]


def test_schema_version_mismatch_is_rebuilt(repo):
    index = _index(repo)
    index.update()
    index.close()
    with sqlite3.connect(repo / ".kimicode/cache/index.sqlite") as conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    conn.close()
    stats = _index(repo).update()
    assert stats.parsed == 5


def test_git_exclude_gets_the_cache_line_once(repo):
    exclude = repo / ".git/info/exclude"
    exclude.write_text("*.log")  # no trailing newline
    _index(repo).close()
    _index(repo).close()
    assert exclude.read_text().splitlines() == ["*.log", ".kimicode/cache/"]
    assert (repo / ".gitignore").read_text() == "build/\n"
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    assert ".kimicode" not in status.stdout


def test_exclude_file_is_created_and_non_git_workspaces_are_left_alone(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    _index(repo).close()
    assert (repo / ".git/info/exclude").read_text() == ".kimicode/cache/\n"
    plain = tmp_path / "plain"
    _write(plain / "a.py", "def a():\n    pass\n")
    index = _index(plain)
    index.update()
    index.update()  # the cache itself is never indexed, even without git to exclude it
    assert list(index.store.files()) == ["a.py"]
    assert not index.changed_since_last_update()


def test_many_files_are_parsed_in_worker_processes(tmp_path):
    root = tmp_path / "many"
    count = indexer.PARALLEL_MIN_FILES * 3
    for i in range(count):
        _write(root / f"pkg/mod{i}.py", f"def func_{i}():\n    return func_{(i + 1) % count}()\n")
    calls: list[tuple[int, int]] = []
    index = _index(root)
    stats = index.update(progress=lambda done, total: calls.append((done, total)))
    assert stats.parsed == count
    assert calls[-1] == (count, count)
    assert _def_paths(index, "func_7") == ["pkg/mod7.py"]
    assert [path for path, _ in index.store.references("func_0")] == [f"pkg/mod{count - 1}.py"]


def test_odd_names_and_symlinks_out_of_the_workspace_are_skipped(tmp_path):
    import os

    from kimicode.index.indexer import RepoIndex
    from kimicode.workspace import Workspace

    root = tmp_path / "ws"
    root.mkdir()
    (root / "ok.py").write_text("def fine():\n    pass\n")
    with open(os.path.join(os.fsencode(root), b"caf\xe9.py"), "wb") as f:  # not UTF-8
        f.write(b"def latin():\n    pass\n")
    outside = tmp_path / "secret.py"
    outside.write_text("SECRET_TOKEN = 'hunter2'\n")
    (root / "link.py").symlink_to(outside)
    index = RepoIndex(Workspace(root))
    stats = index.update()
    assert stats.files == 1
    assert index.store.definitions("SECRET_TOKEN") == [] and index.store.definitions("fine")


def test_deeply_nested_definitions_keep_their_scope_chain():
    from kimicode.index.extract import extract

    depth = 400
    source = "".join(f"function f{i}(){{\n" for i in range(depth)) + "}\n" * depth
    tags = {t.name: t for t in extract("deep.js", source.encode()).tags if t.kind == "def"}
    assert len(tags) == depth and tags[f"f{depth - 1}"].scope.count(".") == depth - 2
