"""Checkpoints of the work tree, kept in a shadow git store, with undo.

Why a shadow store: the user's repository is theirs. Committing, stashing or even
refreshing its index would show up in their history, `git status` or reflog and could
race with git commands they run themselves. So checkpoints live in a separate bare git
directory under the data dir, one per workspace, driven with
`GIT_DIR=<store> GIT_WORK_TREE=<repository top level> GIT_INDEX_FILE=<store>/index`.
The only commands run against the user's repository are `rev-parse` and `ls-files`,
which read and never write.

What a snapshot holds is what `git status` would consider: files tracked by the user's
repository plus untracked files that are not ignored (its .gitignore files,
.git/info/exclude and global excludes, all applied by the user's own `ls-files`), under
the workspace, which may be a subdirectory of the repository. Nested repositories and
submodules are skipped, never read, and never written or deleted by a restore.

Speed comes from the store's own index: it keeps git's stat cache (a restore keeps it
too), so only files whose stat data changed are hashed again; an unchanged tree costs a
directory walk and a few git processes. New blobs are streamed into one pack per
snapshot instead of a loose file each, and `git gc --auto` merges the packs once they
pile up.

A restore deletes what the checkpoint lacks, writes what differs and removes
directories it emptied. Git records no empty directories, and only the executable bit
of a file's mode. Where writing would clobber an ignored file or a nested repository,
the path is left alone.

Checkpoints form one chain of commits under `refs/kimicode/checkpoints` (newest is the
ref, each commit's parent the one before), so `git gc` on the store keeps them all. The
commit message is JSON with the label, creation time and turn. Every `create` records a
checkpoint, even when nothing changed (an empty-diff commit of a few hundred bytes and no
new blobs): a checkpoint also marks a point in the conversation, and "before turn 5" must
stay distinct from "before turn 4" although the files are the same.

The store's git runs with no system or global config, no hooks and `-text -filter` for
every path, so the user's config (autocrlf, LFS filters, signing, fsmonitor, hooks)
cannot change what a snapshot holds or run anything. Plain `subprocess` rather than
gitpython: every call needs an exact environment (inherited GIT_DIR and friends removed),
NUL-separated bytes in and out, and as little per-call latency as possible.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kimicode.paths import data_dir

REF = "refs/kimicode/checkpoints"
GIT_TIMEOUT = 300

# Variables that point git at another repository (`git rev-parse --local-env-vars`, plus
# config injection); inherited ones would redirect commands meant for either repository.
_REPO_ENV = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX",
    "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_SHALLOW_FILE",
    "GIT_GRAFT_FILE", "GIT_REPLACE_REF_BASE", "GIT_NO_REPLACE_OBJECTS", "GIT_IMPLICIT_WORK_TREE",
    "GIT_INTERNAL_SUPER_PREFIX",
)
_STORE_CONFIG = {
    "core.autocrlf": "false",
    "core.symlinks": "true",
    "core.fileMode": "true",
    "core.ignoreCase": "false",
    "core.fsmonitor": "false",
    "commit.gpgSign": "false",
}
# Highest-precedence attributes: store bytes exactly as they are on disk.
_STORE_ATTRIBUTES = "* -text -filter -ident -working-tree-encoding\n"
PACK_LIMIT = 50  # git's gc.autoPackLimit default
_HEX = frozenset("0123456789abcdef")


class CheckpointError(Exception):
    """A checkpoint operation failed; the message is meant for the user as it is."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: str  # the shadow commit sha
    label: str  # e.g. "before turn 3" or "before shell: make clean"
    created: float  # time.time()
    turn: int  # opaque to the store; the agent keeps the conversation length here


class CheckpointStore:
    """Snapshots of `workspace` in the bare git directory `store` (created on first use)."""

    def __init__(self, workspace: Path, store: Path):
        self.workspace = Path(workspace)
        self.store = Path(store)
        self._top, self._prefix = _locate_repository(self.workspace)

    @classmethod
    def for_workspace(cls, workspace: Path) -> CheckpointStore:
        real = os.path.realpath(workspace)
        digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        name = Path(real).name or "root"
        return cls(workspace, data_dir() / "checkpoints" / f"{name}-{digest}.git")

    # -- public API ---------------------------------------------------------------

    def create(self, label: str, turn: int) -> Checkpoint:
        """Snapshot the work tree (see the module docstring for what that covers)."""
        with self._locked():
            return self._commit(self._write_tree(), label, turn)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One snapshot or restore at a time per store: two kimicode runs in one workspace
        would otherwise race on the store's index and lose checkpoints."""
        self.store.parent.mkdir(parents=True, exist_ok=True)
        with open(self.store.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            yield

    def list(self) -> list[Checkpoint]:
        """All checkpoints, newest first."""
        if not self.store.exists():
            return []
        out = self._git("log", "-z", "--first-parent", "--ignore-missing", "--format=%H%n%B", REF)
        return [_parse_checkpoint(record) for record in out.decode().split("\0") if record.strip()]

    def get(self, ref: str) -> Checkpoint:
        """A checkpoint by "last" (the newest), a position of 1 to 3 digits (1 = newest),
        or its id or an unambiguous prefix of at least 4 hex digits."""
        checkpoints = self.list()
        ref = ref.strip().lower()
        if ref == "last" and checkpoints:
            return checkpoints[0]
        if ref.isdigit() and len(ref) < 4:
            if 1 <= int(ref) <= len(checkpoints):
                return checkpoints[int(ref) - 1]
        elif len(ref) >= 4 and set(ref) <= _HEX:
            matches = [c for c in checkpoints if c.id.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise CheckpointError(f"checkpoint id {ref!r} is ambiguous; give more digits")
        raise CheckpointError(f"no checkpoint {ref!r} ({len(checkpoints)} checkpoints; `last`, 1 = newest, or an id)")

    def restore(self, checkpoint: Checkpoint, *, turn: int | None = None) -> Checkpoint:
        """Make the work tree match `checkpoint` and return the checkpoint of the state it
        replaced ("before undo to …", recorded with `turn`, default `checkpoint.turn`), so
        the undo can itself be undone.

        Paths where writing would clobber something outside the snapshots (an ignored file
        or a nested repository in the way) are left as they are; `changed_files` lists
        them afterwards."""
        with self._locked():
            return self._restore(checkpoint, turn)

    def _restore(self, checkpoint: Checkpoint, turn: int | None) -> Checkpoint:
        target = self._tree_of(checkpoint)
        current = self._write_tree()
        before = self._commit(current, f"before undo to {checkpoint.label}", checkpoint.turn if turn is None else turn)
        owned, deletes, writes = self._diff(current, target)
        writes = [path for path in writes if self._can_write(path, owned)]
        # Index first: if git fails here, the work tree is still untouched. A two-tree
        # read-tree keeps the stat cache of every entry that stays the same.
        self._git("read-tree", "-m", current, target)
        self._delete(deletes)
        if writes:
            self._git("checkout-index", "-f", "-u", "-z", "--stdin", input=_nul_join(writes))
        return before

    def changed_files(self, checkpoint: Checkpoint) -> list[str]:
        """Workspace-relative paths that differ between `checkpoint` and the work tree."""
        target = self._tree_of(checkpoint)
        out = self._git("diff-tree", "-r", "-z", "--no-renames", "--name-only", target, self._write_tree())
        return sorted(self._relative(path) for path in _nul_split(out))

    def diff(self, checkpoint: Checkpoint) -> str:
        """A unified diff from `checkpoint` to the work tree (binary files summarised)."""
        with self._locked():
            current = self._write_tree()
        target = self._tree_of(checkpoint)
        return self._git("diff", "--no-color", "--no-renames", target, current).decode("utf-8", "replace")

    # -- snapshots ----------------------------------------------------------------

    def _write_tree(self) -> str:
        """Bring the store's index in line with the work tree and write it as a tree."""
        self._ensure_store()
        wanted = self._listing()
        stale = set(self._git("ls-files", "-z").split(b"\0")) - wanted - {b""}
        if stale:  # entries that are now ignored, nested repositories, or gone
            self._git("update-index", "--force-remove", "-z", "--stdin", input=_nul_join(stale))
        # Bulk check-in (every blob over 1 byte streamed into one new pack per call, not a
        # loose file each) makes a first snapshot of thousands of files several times faster.
        # --remove: a file deleted since the listing is dropped instead of failing the call.
        self._git("-c", "core.bigFileThreshold=1", "update-index", "--add", "--remove", "--replace",
                  "-z", "--stdin", input=_nul_join(wanted))
        return self._git("write-tree").decode().strip()

    def _listing(self) -> set[bytes]:
        """Paths (relative to the top level) a snapshot holds: the user's tracked files and
        untracked, non-ignored files, as their own git sees them, that are files or
        symlinks now. Left out: nested repositories (listed as "dir/"), submodules (a
        directory), tracked files deleted or below what is now a file or a symlink.
        Bytes throughout: this runs over every file of the workspace."""
        pathspec = [self._prefix] if self._prefix else []
        out = _run(["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *pathspec],
                   cwd=self._top, env=_user_env())
        top = os.fsencode(self._top) + b"/"
        real_dirs = {b"": True}

        def under_real_dirs(path: bytes) -> bool:
            parent = path.rpartition(b"/")[0]
            if parent not in real_dirs:
                real_dirs[parent] = under_real_dirs(parent) and _is_real_dir(top + parent)
            return real_dirs[parent]

        return {path for path in out.split(b"\0")
                if path and not path.endswith(b"/") and under_real_dirs(path) and _is_file_or_link(top + path)}

    def _commit(self, tree: str, label: str, turn: int) -> Checkpoint:
        created = time.time()
        message = json.dumps({"label": label, "created": created, "turn": turn})
        parent = self._git("rev-parse", "-q", "--verify", REF, check=False).decode().strip()
        parents = ["-p", parent] if parent else []
        commit = self._git("commit-tree", tree, *parents, input=message.encode()).decode().strip()
        # Compare-and-swap, so a concurrent create cannot silently drop a checkpoint.
        self._git("update-ref", REF, commit, parent)
        self._maintain()
        return Checkpoint(commit, label, created, turn)

    def _maintain(self) -> None:
        """Bulk check-in leaves a pack per snapshot that hashed something, and plumbing
        never starts gc; once packs pile up, let git consolidate them (in the background,
        as it does after a commit). Counting them here saves a git call per snapshot."""
        packs = self.store / "objects" / "pack"
        if sum(name.endswith(".pack") for name in os.listdir(packs)) > PACK_LIMIT:
            self._git("gc", "--auto", "--quiet")

    # -- restoring ----------------------------------------------------------------

    def _diff(self, current: str, target: str) -> tuple[set[str], set[str], list[str]]:
        """Going from tree `current` to tree `target`: (changed paths that are in
        `current`, paths to delete, paths to write)."""
        fields = _nul_split(self._git("diff-tree", "-r", "-z", "--no-renames", current, target))
        owned, deletes, writes = set(), set(), []
        for meta, path in zip(fields[0::2], fields[1::2], strict=True):
            old_mode, *_, status = meta.split()  # ":100644 100755 <old sha> <new sha> M"
            if old_mode != ":000000":
                owned.add(path)
            (deletes.add if status == "D" else writes.append)(path)
        return owned, deletes, writes

    def _can_write(self, path: str, owned: set[str]) -> bool:
        """Whether checking out `path` only replaces files of the current snapshot:
        no ignored file and no nested repository is in the way, at the path or above."""
        for parent in reversed(Path(path).parents[:-1]):
            directory = self._top / parent
            if os.path.lexists(directory / ".git"):
                return False
            if os.path.lexists(directory) and not _is_real_dir(directory) and parent.as_posix() not in owned:
                return False
        full = self._top / path
        if not _is_real_dir(full):
            return not os.path.lexists(full) or path in owned
        for root, dirs, files in os.walk(full):
            if ".git" in dirs or ".git" in files:
                return False
            rel = Path(root).relative_to(self._top)
            # os.walk puts symlinks to directories in `dirs`; to git they are files.
            leaves = files + [d for d in dirs if os.path.islink(os.path.join(root, d))]
            if any((rel / name).as_posix() not in owned for name in leaves):
                return False
        return True

    def _delete(self, paths: set[str]) -> None:
        """Delete files and symlinks, then directories our deletions left empty."""
        workspace = self._top / self._prefix
        parents = set()
        for path in paths:
            full = self._top / path
            if any(os.path.lexists(self._top / p / ".git") for p in Path(path).parents[:-1]):
                continue  # inside a nested repository now: not ours to touch
            with contextlib.suppress(FileNotFoundError):
                os.unlink(full)
            parents.update(p for p in full.parents if p.is_relative_to(workspace) and p != workspace)
        for directory in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            # Fails when not empty: something we do not own is still there.
            with contextlib.suppress(OSError):
                directory.rmdir()

    def _tree_of(self, checkpoint: Checkpoint) -> str:
        tree = ""
        if self.store.exists() and set(checkpoint.id) <= _HEX:
            tree = self._git("rev-parse", "-q", "--verify", f"{checkpoint.id}^{{tree}}", check=False).decode().strip()
        if not tree:
            raise CheckpointError(f"unknown checkpoint {checkpoint.id[:12]!r}")
        return tree

    # -- plumbing -----------------------------------------------------------------

    def _relative(self, path: str) -> str:
        return path[len(self._prefix):] if self._prefix else path

    def _ensure_store(self) -> None:
        if (self.store / "HEAD").exists():
            return
        self.store.parent.mkdir(parents=True, exist_ok=True)
        _run(["-c", "init.defaultBranch=main", "init", "-q", "--bare", "--template=", str(self.store)],
             cwd=self.store.parent, env=_isolated_env())
        hooks = self.store / "no-hooks"
        hooks.mkdir(exist_ok=True)
        for key, value in {**_STORE_CONFIG, "core.hooksPath": str(hooks)}.items():
            self._git("config", key, value)
        (self.store / "info").mkdir(exist_ok=True)
        (self.store / "info" / "attributes").write_text(_STORE_ATTRIBUTES)

    def _env(self) -> dict[str, str]:
        return {
            **_isolated_env(),
            "GIT_DIR": str(self.store),
            "GIT_WORK_TREE": str(self._top),
            # The store's default index path, so `git gc` in the store counts its blobs as used.
            "GIT_INDEX_FILE": str(self.store / "index"),
        }

    def _git(self, *args: str, input: bytes | None = None, check: bool = True) -> bytes:
        return _run(list(args), cwd=self._top, env=self._env(), input=input, check=check)


def _locate_repository(workspace: Path) -> tuple[Path, str]:
    """(top level of the work tree containing `workspace`, workspace's path below it
    with a trailing slash, or "")."""
    if not workspace.is_dir():
        raise CheckpointError(f"not a directory: {workspace}")
    try:
        out = _run(["rev-parse", "--show-toplevel", "--show-prefix"], cwd=workspace, env=_user_env())
    except CheckpointError as error:
        raise CheckpointError(
            f"not a git repository: {workspace} (checkpoints need one; run `git init` there)"
        ) from error
    top, prefix = out.decode("utf-8", "surrogateescape").split("\n")[:2]
    return Path(top), prefix


def _user_env() -> dict[str, str]:
    """For the read-only commands run in the user's repository, with the user's config."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
    env.update(GIT_LITERAL_PATHSPECS="1", GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0")
    return env


def _isolated_env() -> dict[str, str]:
    """For the store: no system or global config, and an identity of its own."""
    return {
        **_user_env(),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "kimicode", "GIT_AUTHOR_EMAIL": "kimicode@localhost",
        "GIT_COMMITTER_NAME": "kimicode", "GIT_COMMITTER_EMAIL": "kimicode@localhost",
    }


def _run(args: list[str], *, cwd: Path, env: dict[str, str], input: bytes | None = None, check: bool = True) -> bytes:
    command = args[2] if args[0] == "-c" else args[0]
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=env, input=input, capture_output=True,
                              timeout=GIT_TIMEOUT, check=False)
    except FileNotFoundError as error:
        raise CheckpointError("git is not installed (checkpoints need it)") from error
    except subprocess.TimeoutExpired as error:
        raise CheckpointError(f"git {command} took longer than {GIT_TIMEOUT}s") from error
    if check and done.returncode != 0:
        # git's first line says what went wrong ("fatal: Unable to create '…/index.lock'");
        # later ones are advice.
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        detail = lines[0].removeprefix("fatal: ").removeprefix("error: ") if lines else f"exit status {done.returncode}"
        raise CheckpointError(f"git {command} failed: {detail}")
    return done.stdout


def _parse_checkpoint(record: str) -> Checkpoint:
    sha, _, message = record.strip("\n").partition("\n")
    try:
        meta = json.loads(message)
        return Checkpoint(sha, str(meta["label"]), float(meta["created"]), int(meta["turn"]))
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint {sha[:12]} has unreadable metadata") from error


def _is_real_dir(path: Path | bytes) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _is_file_or_link(path: Path | bytes) -> bool:
    try:
        return not stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _nul_split(data: bytes) -> list[str]:
    return [os.fsdecode(item) for item in data.split(b"\0") if item]


def _nul_join(paths: Iterable[str | bytes]) -> bytes:
    return b"".join(os.fsencode(path) + b"\0" for path in sorted(paths))
