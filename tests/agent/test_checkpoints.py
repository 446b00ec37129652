"""Checkpoints on real temporary git repositories: exact restores, the user's repository
left as it was, ignored files and nested repositories left alone."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from kimicode.agent.checkpoints import Checkpoint, CheckpointError, CheckpointStore
from kimicode.paths import data_dir


@pytest.fixture(autouse=True)
def git_identity(monkeypatch):
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "test@example.com")


def git(root: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {done.stderr}")
    return done.stdout


def write(path: Path, data: bytes | str = "x", mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root / "README.md", "hello\n")
    write(root / "src" / "app.py", "print('hi')\n")
    write(root / "run.sh", "#!/bin/sh\necho run\n", 0o755)
    write(root / ".gitignore", "*.log\nbuild/\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def tree_map(root: Path) -> dict[str, tuple]:
    """Every file and symlink under `root` (outside .git): content or target, exec bit."""
    result = {}
    for parent, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(parent, d))]:
            path = Path(parent, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                result[rel] = ("link", os.readlink(path))
            else:
                result[rel] = ("file", path.read_bytes(), bool(path.stat().st_mode & 0o100))
    return result


def user_repo_state(root: Path) -> dict[str, object]:
    git_dir = root / ".git"
    files = {p.relative_to(git_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(git_dir.rglob("*")) if p.is_file()}
    head = subprocess.run(["git", "rev-parse", "-q", "--verify", "HEAD"], cwd=root, capture_output=True, text=True)
    return {
        "status": git(root, "status", "--porcelain", "--untracked-files=all"),
        "stash": git(root, "stash", "list"),
        "branches": git(root, "branch", "-a"),
        "head": (head.returncode, head.stdout),
        "index": (git_dir / "index").read_bytes() if (git_dir / "index").exists() else None,
        "config": (git_dir / "config").read_bytes(),
        "git_dir": files,
    }


def store_for(root: Path) -> CheckpointStore:
    return CheckpointStore.for_workspace(root)


# -- exact restores ---------------------------------------------------------------


def test_restore_is_byte_exact_after_edits_new_files_deletions_and_modes(repo):
    write(repo / "dir with space" / "ünïcödé file.txt", "unicode\n")
    write(repo / "empty", b"")
    write(repo / "blob.bin", bytes(range(256)) * 40)
    write(repo / "crlf.txt", b"a\r\nb\nc\r\n")
    write(repo / "tab\tand\nnewline", "odd name\n")
    write(repo / os.fsdecode(b"latin1-\xe9.txt"), "not utf-8 on disk\n")
    os.symlink("README.md", repo / "link")
    os.symlink("missing/target", repo / "dangling")
    store = store_for(repo)
    before = tree_map(repo)
    checkpoint = store.create("before turn 1", 1)

    write(repo / "README.md", "changed\n")
    (repo / "run.sh").chmod(0o644)
    (repo / "src" / "app.py").chmod(0o755)
    (repo / "empty").write_bytes(b"now something")
    (repo / "blob.bin").unlink()
    shutil.rmtree(repo / "dir with space")
    write(repo / "new" / "deep" / "file.txt", "new\n")
    (repo / "link").unlink()
    write(repo / "link", "a file where the symlink was")
    (repo / "crlf.txt").unlink()
    os.symlink("README.md", repo / "crlf.txt")
    (repo / "tab\tand\nnewline").unlink()
    write(repo / os.fsdecode(b"latin1-\xe9.txt"), "changed\n")
    assert set(store.changed_files(checkpoint)) == {
        "README.md", "run.sh", "src/app.py", "empty", "blob.bin", "dir with space/ünïcödé file.txt",
        "new/deep/file.txt", "link", "crlf.txt", "tab\tand\nnewline", os.fsdecode(b"latin1-\xe9.txt"),
    }

    store.restore(checkpoint)
    assert tree_map(repo) == before
    assert not (repo / "new").exists()  # directories emptied by the restore are removed
    assert store.changed_files(checkpoint) == []


def test_restore_reverts_changes_made_by_shell_commands(repo):
    store = store_for(repo)
    before = tree_map(repo)
    checkpoint = store.create("before shell: make clean", 2)
    subprocess.run("rm -rf src && mkdir -p out && echo built > out/a.o && chmod -x run.sh && mv README.md README"
                   " && printf '\\000\\001' > bin.dat && ln -s out outlink",
                   shell=True, cwd=repo, check=True)
    store.restore(checkpoint)
    assert tree_map(repo) == before


def test_randomized_changes_restore_exactly(repo):
    rng = random.Random(1234)
    store = store_for(repo)
    dirs = ["", "src", "src/deep/er", "docs dir", "ünï/cödé", "a/b/c/d"]
    names = ["f1.txt", "with space.md", "ü2.bin", "empty", "script.sh", "x"]

    def is_ignored(rel: str) -> bool:
        return rel.endswith(".log") or rel.startswith("build/")

    def ours(tree: dict) -> dict:
        return {k: v for k, v in tree.items() if not is_ignored(k)}

    def existing_files() -> list[str]:  # .gitignore stays as it is, so "ignored" stays fixed
        return sorted(k for k in tree_map(repo) if not is_ignored(k) and k != ".gitignore")

    def existing_dirs() -> list[str]:
        found = []
        for parent, subdirs, _ in os.walk(repo):
            subdirs[:] = [d for d in subdirs
                          if d not in (".git", "build") and not os.path.islink(os.path.join(parent, d))]
            found += [Path(parent, d).relative_to(repo).as_posix() for d in subdirs]
        return sorted(found)

    def content() -> bytes:
        kind = rng.random()
        if kind < 0.15:
            return b""
        if kind < 0.35:
            return rng.randbytes(rng.randint(1, 3000))
        return "".join(rng.choice("abc \n\r\tü") for _ in range(rng.randint(1, 200))).encode()

    def write_at(rel: str) -> None:
        path = repo / rel
        for parent in reversed(path.relative_to(repo).parents[:-1]):
            target = repo / parent
            if target.is_symlink() or target.is_file():
                target.unlink()  # a file where a directory is needed: replace it
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.is_symlink():
            path.unlink()
        write(path, content(), rng.choice([0o644, 0o755]))

    def random_op() -> None:
        files, op = existing_files(), rng.randrange(9)
        if op == 0 or not files:
            write_at(f"{rng.choice(dirs)}/{rng.choice(names)}".lstrip("/"))
        elif op == 1:
            write_at(rng.choice(files))
        elif op == 2:
            (repo / rng.choice(files)).unlink()
        elif op == 3:
            path = repo / rng.choice(files)
            if not path.is_symlink():
                path.chmod(path.stat().st_mode ^ 0o111)
        elif op == 4:
            link = repo / rng.choice(dirs) / f"link{rng.randrange(3)}"
            if not os.path.lexists(link) and link.parent.is_dir() and not link.parent.is_symlink():
                os.symlink(rng.choice(["../README.md", "f1.txt", "nowhere", "src"]), link)
        elif op == 5:  # a file becomes a directory
            path = repo / rng.choice(files)
            path.unlink()
            write(path / "inner.txt", content())
        elif op == 6 and existing_dirs():  # a directory becomes a file
            path = repo / rng.choice(existing_dirs())
            shutil.rmtree(path)
            write(path, content())
        elif op == 7 and not (repo / (source := rng.choice(files))).is_symlink():  # another program
            script = 'rm -rf "$0.moved" && mv "$0" "$0.moved" && printf more >> "$0.moved" && chmod +x "$0.moved"'
            subprocess.run(["sh", "-c", script, source], cwd=repo, check=True)
        else:  # ignored files, which restores must not touch
            write(repo / rng.choice(["debug.log", "build/out.bin", "build/deep/x.o"]), content())

    history: list[tuple[Checkpoint, dict]] = [(store.create("start", 0), ours(tree_map(repo)))]
    for trial in range(30):
        for _ in range(rng.randint(1, 8)):
            random_op()
        if rng.random() < 0.6:
            history.append((store.create(f"trial {trial}", trial), ours(tree_map(repo))))
        checkpoint, expected = rng.choice(history)
        now = tree_map(repo)
        undo = store.restore(checkpoint)
        after = tree_map(repo)
        assert ours(after) == expected, f"trial {trial}"
        assert {k: v for k, v in after.items() if is_ignored(k)} == {k: v for k, v in now.items() if is_ignored(k)}
        if rng.random() < 0.3:
            store.restore(undo)
            assert ours(tree_map(repo)) == ours(now), f"undo of undo, trial {trial}"


# -- the user's repository is never touched -------------------------------------


def test_users_repository_is_untouched(repo):
    git(repo, "branch", "feature")
    write(repo / "README.md", "stashed change\n")
    git(repo, "stash", "-q")
    write(repo / "src" / "app.py", "staged\n")
    git(repo, "add", "src/app.py")
    write(repo / "README.md", "unstaged\n")
    write(repo / "untracked.txt", "new\n")
    write(repo / "debug.log", "ignored\n")
    state = user_repo_state(repo)
    store = store_for(repo)

    checkpoint = store.create("before turn 1", 1)
    assert user_repo_state(repo) == state
    write(repo / "README.md", "agent edit\n")
    (repo / "untracked.txt").unlink()
    write(repo / "another.txt", "more\n")
    store.restore(checkpoint)
    assert user_repo_state(repo) == state
    hooks = subprocess.run(["git", "config", "core.hooksPath"], env={**os.environ, "GIT_DIR": str(store.store)},
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(hooks).is_dir() and not any(Path(hooks).iterdir())  # the store runs no hooks


def test_repository_without_commits(tmp_path):
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q")
    write(root / "a.txt", "a\n")
    state = user_repo_state(root)
    store = store_for(root)
    before = tree_map(root)
    checkpoint = store.create("before turn 1", 1)
    write(root / "a.txt", "changed\n")
    write(root / "b.txt", "b\n")
    store.restore(checkpoint)
    assert tree_map(root) == before
    assert user_repo_state(root) == state
    assert state["head"][0] != 0  # still no HEAD commit


def test_detached_head(repo):
    write(repo / "README.md", "second\n")
    git(repo, "commit", "-q", "-am", "second")
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    state = user_repo_state(repo)
    store = store_for(repo)
    before = tree_map(repo)
    checkpoint = store.create("before turn 1", 1)
    write(repo / "README.md", "edited while detached\n")
    store.restore(checkpoint)
    assert tree_map(repo) == before
    assert user_repo_state(repo) == state


# -- scope: subdirectories, ignored files, nested repositories -------------------


def test_subdirectory_workspace_snapshots_and_restores_only_that_directory(repo):
    workspace = repo / "src"
    write(workspace / "lib" / "util.py", "util\n")
    store = store_for(workspace)
    before = tree_map(workspace)
    checkpoint = store.create("before turn 1", 1)
    write(workspace / "app.py", "changed\n")
    write(workspace / "lib" / "new.py", "new\n")
    write(repo / "README.md", "outside the workspace\n")
    write(repo / "outside.txt", "outside\n")
    assert store.changed_files(checkpoint) == ["app.py", "lib/new.py"]
    store.restore(checkpoint)
    assert tree_map(workspace) == before
    assert (repo / "README.md").read_text() == "outside the workspace\n"
    assert (repo / "outside.txt").exists()


def test_subdirectory_workspace_honours_ignore_rules_of_parent_directories(repo):
    workspace = repo / "src"
    store = store_for(workspace)
    checkpoint = store.create("before turn 1", 1)
    write(workspace / "trace.log", "ignored by the top-level .gitignore\n")
    assert store.changed_files(checkpoint) == []


def test_ignored_files_are_not_snapshotted_and_never_touched_by_restore(repo, isolated_home):
    write(repo / ".git" / "info" / "exclude", "secret.env\n")
    write(isolated_home / "config" / "git" / "ignore", "*.global\n")  # the user's global excludes
    write(repo / "forced.log", "tracked although it matches *.log\n")
    git(repo, "add", "-f", "forced.log")
    write(repo / "debug.log", "old log\n")
    write(repo / "build" / "out.o", "old object\n")
    store = store_for(repo)
    checkpoint = store.create("before turn 1", 1)

    write(repo / "debug.log", "new log\n")
    (repo / "build" / "out.o").unlink()
    write(repo / "build" / "fresh.o", "fresh\n")
    write(repo / "secret.env", "KEY=1\n")
    write(repo / "cache.global", "global\n")
    write(repo / "forced.log", "changed\n")
    assert store.changed_files(checkpoint) == ["forced.log"]

    store.restore(checkpoint)
    assert (repo / "forced.log").read_text() == "tracked although it matches *.log\n"
    assert (repo / "debug.log").read_text() == "new log\n"
    assert not (repo / "build" / "out.o").exists()
    assert (repo / "build" / "fresh.o").read_text() == "fresh\n"
    assert (repo / "secret.env").read_text() == "KEY=1\n"
    assert (repo / "cache.global").exists()


def test_restore_leaves_an_ignored_file_in_the_way_and_reports_it(repo):
    write(repo / "notes", "snapshotted\n")
    store = store_for(repo)
    checkpoint = store.create("before turn 1", 1)
    (repo / "notes").unlink()
    write(repo / ".gitignore", "*.log\nbuild/\nnotes\n")
    write(repo / "notes", "now ignored, and the user's\n")
    store.restore(checkpoint)
    # .gitignore came back first-class; the ignored file was not overwritten.
    assert (repo / ".gitignore").read_text() == "*.log\nbuild/\n"
    assert (repo / "notes").read_text() == "now ignored, and the user's\n"
    assert store.changed_files(checkpoint) == ["notes"]


def test_nested_repositories_are_left_alone(repo):
    nested = repo / "vendor" / "lib"
    nested.mkdir(parents=True)
    git(nested, "init", "-q")
    write(nested / "lib.c", "int x;\n")
    git(nested, "add", "-A")
    git(nested, "commit", "-q", "-m", "lib")
    unborn = repo / "scratch"
    unborn.mkdir()
    git(unborn, "init", "-q")  # no commits: `git add` of it would fail
    write(unborn / "wip.txt", "wip\n")
    write(repo / "plain" / "file.txt", "plain\n")
    write(repo / "plain" / "other.txt", "other\n")
    store = store_for(repo)
    checkpoint = store.create("before turn 1", 1)

    write(nested / "lib.c", "int y;\n")
    write(nested / "new.c", "new\n")
    (unborn / "wip.txt").unlink()
    assert store.changed_files(checkpoint) == []
    # A directory snapshotted as plain files that has since become a repository.
    git(repo / "plain", "init", "-q")
    write(repo / "plain" / "file.txt", "inside a repository now\n")
    (repo / "plain" / "other.txt").unlink()
    nested_state = (nested / ".git" / "index").read_bytes()

    store.restore(checkpoint)
    assert (nested / "lib.c").read_text() == "int y;\n"
    assert (nested / "new.c").exists()
    assert not (unborn / "wip.txt").exists()
    assert (repo / "plain" / "file.txt").read_text() == "inside a repository now\n"
    assert not (repo / "plain" / "other.txt").exists()
    assert (nested / ".git" / "index").read_bytes() == nested_state
    assert (unborn / ".git").is_dir()


def test_files_the_user_tracks_inside_a_nested_repository_are_not_deleted(repo):
    store = store_for(repo)
    checkpoint = store.create("before turn 1", 1)
    write(repo / "legacy" / "x.txt", "tracked by the outer repository\n")
    git(repo, "add", "legacy/x.txt")
    git(repo / "legacy", "init", "-q")
    store.restore(checkpoint)  # the snapshot it replaces holds legacy/x.txt
    assert (repo / "legacy" / "x.txt").exists()


def test_submodules_are_left_alone(repo, tmp_path):
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q")
    write(upstream / "mod.txt", "v1\n")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "v1")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(upstream), "mod")
    git(repo, "commit", "-q", "-m", "submodule")
    store = store_for(repo)
    checkpoint = store.create("before turn 1", 1)
    write(repo / "mod" / "mod.txt", "changed inside the submodule\n")
    write(repo / "README.md", "changed\n")
    assert store.changed_files(checkpoint) == ["README.md"]
    store.restore(checkpoint)
    assert (repo / "mod" / "mod.txt").read_text() == "changed inside the submodule\n"
    assert (repo / "README.md").read_text() == "hello\n"


def test_users_git_config_and_attributes_do_not_change_snapshots(repo, isolated_home):
    write(isolated_home / ".gitconfig", "[core]\n\tautocrlf = true\n[commit]\n\tgpgSign = true\n"
          "[filter \"upper\"]\n\tclean = tr a-z A-Z\n\tsmudge = cat\n")
    write(repo / ".gitattributes", "*.txt text eol=crlf\n*.up filter=upper\n")
    write(repo / "mixed.txt", b"lf\ncrlf\r\n")
    write(repo / "data.up", "lower case\n")
    store = store_for(repo)
    before = tree_map(repo)
    checkpoint = store.create("before turn 1", 1)
    write(repo / "mixed.txt", "changed\n")
    write(repo / "data.up", "changed\n")
    store.restore(checkpoint)
    assert tree_map(repo) == before


# -- the checkpoint list ------------------------------------------------------------


def test_list_get_and_unchanged_trees(repo):
    store = store_for(repo)
    assert store.list() == []
    first = store.create("before turn 1", 1)
    write(repo / "README.md", "changed\n")
    second = store.create("before turn 2", 4)
    third = store.create("before turn 3", 6)  # nothing changed: still its own checkpoint
    assert third.id != second.id and store.changed_files(third) == store.changed_files(second) == []
    assert store.list() == [third, second, first]
    assert store.get("last") == store.get("1") == third
    assert store.get("3") == first
    assert store.get(second.id) == store.get(second.id[:7]) == second
    assert (third.label, third.turn) == ("before turn 3", 6)


def test_unknown_checkpoints_are_refused(repo):
    store = store_for(repo)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        store.get("last")
    store.create("before turn 1", 1)
    for ref in ("2", "0", "deadbeef", "not-a-ref", ""):
        with pytest.raises(CheckpointError, match="no checkpoint"):
            store.get(ref)
    with pytest.raises(CheckpointError, match="unknown checkpoint"):
        store.restore(Checkpoint("0" * 40, "ghost", 0.0, 0))
    with pytest.raises(CheckpointError, match="unknown checkpoint"):
        store.changed_files(Checkpoint("not hex", "ghost", 0.0, 0))


def test_undo_of_an_undo(repo):
    store = store_for(repo)
    original = tree_map(repo)
    checkpoint = store.create("before turn 1", 1)
    write(repo / "README.md", "agent's work\n")
    write(repo / "feature.py", "feature\n")
    (repo / "run.sh").unlink()
    worked = tree_map(repo)

    undo = store.restore(checkpoint, turn=9)
    assert tree_map(repo) == original
    assert (undo.label, undo.turn) == ("before undo to before turn 1", 9)
    assert store.list()[0] == undo

    redo = store.restore(undo)
    assert tree_map(repo) == worked
    assert redo.label == "before undo to before undo to before turn 1"
    store.restore(store.get("3"))
    assert tree_map(repo) == original


# -- the store itself -------------------------------------------------------------


def test_store_location_and_gc(repo):
    store = store_for(repo)
    assert store.store.parent == data_dir() / "checkpoints"
    assert store.store.name.startswith("repo-") and store.store.name.endswith(".git")
    checkpoint = store.create("before turn 1", 1)
    write(repo / "README.md", "changed\n")
    store.create("before turn 2", 2)
    env = {**os.environ, "GIT_DIR": str(store.store)}
    subprocess.run(["git", "gc", "-q", "--prune=now"], env=env, check=True)
    store.restore(checkpoint)
    assert (repo / "README.md").read_text() == "hello\n"
    assert len(store.list()) == 3


def test_restore_keeps_the_stat_cache(repo):
    """After a restore, every entry of the store's index still has its stat data, so the
    next snapshot hashes nothing (a plain read-tree would drop it for every file)."""
    for i in range(50):
        write(repo / "many" / f"file{i}.txt", f"{i}\n")
    store = store_for(repo)
    checkpoint = store.create("before turn 1", 1)
    write(repo / "README.md", "changed\n")
    (repo / "many" / "file0.txt").unlink()
    store.create("before turn 2", 2)
    store.restore(checkpoint)
    env = {**os.environ, "GIT_DIR": str(store.store), "GIT_INDEX_FILE": str(store.store / "index"),
           "GIT_WORK_TREE": str(repo)}
    debug = subprocess.run(["git", "ls-files", "--debug"], cwd=repo, env=env, capture_output=True, text=True,
                           check=True).stdout
    mtimes = [line.split()[1] for line in debug.splitlines() if line.strip().startswith("mtime:")]
    assert len(mtimes) == len(tree_map(repo)) and "0:0" not in mtimes


def test_refuses_outside_a_git_repository(tmp_path):
    with pytest.raises(CheckpointError, match="not a git repository.*git init"):
        CheckpointStore.for_workspace(tmp_path)
    with pytest.raises(CheckpointError, match="not a directory"):
        CheckpointStore.for_workspace(tmp_path / "missing")


def test_git_failures_become_checkpoint_errors(repo):
    store = store_for(repo)
    store.create("before turn 1", 1)
    (store.store / "index.lock").write_text("")  # another process holds the store's index
    with pytest.raises(CheckpointError, match="index.lock"):
        store.create("before turn 2", 2)


def test_git_environment_of_the_caller_is_ignored(repo, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "stray-index"))
    store = store_for(repo)
    checkpoint = store.create("before turn 1", 1)
    write(repo / "README.md", "changed\n")
    assert store.changed_files(checkpoint) == ["README.md"]
    assert not (tmp_path / "stray-index").exists()


def test_concurrent_snapshots_all_land(tmp_path):
    """Several writers (kimicode runs in one workspace) must not lose checkpoints."""
    from concurrent.futures import ThreadPoolExecutor

    repo = tmp_path / "concurrent"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "f.txt").write_text("x")
    store = CheckpointStore(repo, tmp_path / "store.git")
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda i: store.create(f"cp {i}", i), range(12)))
    assert {cp.id for cp in store.list()} >= {cp.id for cp in made} and len(store.list()) == 12
