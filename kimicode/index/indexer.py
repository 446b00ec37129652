"""Keep the symbol store in step with the workspace, re-parsing only what changed.

A file is re-read only when its (mtime_ns, size) stamp moved, and re-parsed only
when the digest of its bytes moved too, so a touch or a checkout that restores
the same content costs a read, not a parse.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from kimicode.index.extract import extract
from kimicode.index.languages import language_for
from kimicode.index.model import FileTags
from kimicode.index.store import IndexStore
from kimicode.workspace import Workspace

MAX_FILE_BYTES = 1_000_000
# Below this many files, starting worker processes costs more than it saves.
PARALLEL_MIN_FILES = 20
CACHE_EXCLUDE_LINE = ".kimicode/cache/"
MAX_FILES = 50_000

Progress = Callable[[int, int], None]
# (absolute path, workspace-relative path, digest stored for it or "")
_Job = tuple[str, str, str]
# (relative path, digest of the bytes read, tags, or None when the digest matched / the read failed)
_Result = tuple[str, str, FileTags | None]


@dataclass
class IndexStats:
    files: int  # files recorded, parseable or not
    parsed: int  # files parsed by this update
    removed: int  # files dropped because they are gone
    defs: int
    refs: int
    languages: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class _Seen:
    path: str
    rel: str
    mtime_ns: int
    size: int


class IndexTooLarge(Exception):
    """The workspace has more files than the index takes on (e.g. a home folder)."""


class RepoIndex:
    def __init__(self, workspace: Workspace, cache_dir: Path | None = None):
        self.workspace = workspace
        # Real path: `_scan` compares it with the real paths the walk yields.
        default = workspace.root / ".kimicode" / "cache"
        self.cache_dir = Path(os.path.realpath(cache_dir)) if cache_dir is not None else default
        if cache_dir is None:
            _exclude_from_git(workspace.root, CACHE_EXCLUDE_LINE)
        self.store = IndexStore(self.cache_dir / "index.sqlite")
        self._totals: dict | None = None
        # One update at a time: a cancelled asyncio.to_thread(update) keeps running, and a
        # second update sharing the connection would interleave with it.
        self._lock = threading.Lock()
        self.generation = 0  # goes up whenever an update changed what the index holds

    def close(self) -> None:
        self.store.close()

    def update(self, *, progress: Progress | None = None) -> IndexStats:
        with self._lock:
            return self._update(progress)

    def _update(self, progress: Progress | None) -> IndexStats:
        started = time.perf_counter()
        stored = self.store.files()
        jobs: list[tuple[_Job, _Seen]] = []
        present: set[str] = set()
        with self.store.transaction():
            for count, seen in enumerate(self._scan()):
                if count >= MAX_FILES:
                    raise IndexTooLarge(f"more than {MAX_FILES} files: too large to index here; use grep")
                present.add(seen.rel)
                old = stored.get(seen.rel)
                if old is not None and old[:2] == (seen.mtime_ns, seen.size):
                    continue
                if seen.size > MAX_FILE_BYTES or language_for(seen.rel) is None:
                    # Listed so the agent knows it exists, but never read.
                    self.store.replace_file(FileTags(seen.rel, None, ()), seen.mtime_ns, seen.size, "")
                else:
                    jobs.append(((seen.path, seen.rel, old[2] if old else ""), seen))
            parsed = self._apply(jobs, progress)
            removed = [path for path in stored if path not in present]
            self.store.remove_files(removed)
        if parsed or removed or len(present) != len(stored):
            self.generation += 1
        if self._totals is None or jobs or removed or len(present) != len(stored):
            self._totals = self.store.stats()  # counting 200k tags costs ~30 ms: only after changes
        totals = self._totals
        return IndexStats(
            files=totals["files"],
            parsed=parsed,
            removed=len(removed),
            defs=totals["defs"],
            refs=totals["refs"],
            languages=totals["languages"],
            seconds=time.perf_counter() - started,
        )

    def changed_since_last_update(self) -> bool:
        """Whether any file appeared, vanished or got a new stamp (stats only, reads nothing)."""
        stored = self.store.files()
        count = 0
        for seen in self._scan():
            old = stored.get(seen.rel)
            if old is None or old[:2] != (seen.mtime_ns, seen.size):
                return True
            count += 1
        return count != len(stored)

    def _apply(self, jobs: list[tuple[_Job, _Seen]], progress: Progress | None) -> int:
        """Read, digest and (when the content changed) parse the jobs; store the outcome."""
        seen_by_rel = {seen.rel: seen for _, seen in jobs}
        parsed = done = 0
        for results in _run_jobs([job for job, _ in jobs]):
            for rel, digest, file_tags in results:
                seen = seen_by_rel[rel]
                if file_tags is not None:
                    self.store.replace_file(file_tags, seen.mtime_ns, seen.size, digest)
                    parsed += 1
                elif digest:
                    self.store.update_stamp(rel, seen.mtime_ns, seen.size)
                # else: unreadable now (deleted or replaced mid-walk); the next update sees it again
            done += len(results)
            if progress is not None:
                progress(done, len(jobs))
        return parsed

    def _scan(self) -> Iterator[_Seen]:
        """Every regular file of the workspace with its stamp, the cache folder left out."""
        root = self.workspace.root
        root_str = str(root)
        for dirpath, dirs, files in self.workspace.walk(root):
            # The cache may not be git-excluded (no git repo, or the workspace is a subfolder).
            dirs[:] = [name for name in dirs if dirpath / name != self.cache_dir]
            folder = str(dirpath)
            rel_dir = folder[len(root_str) + 1 :].replace(os.sep, "/")
            for name in files:
                path = os.path.join(folder, name)  # strings: Path objects per file cost too much here
                rel = f"{rel_dir}/{name}" if rel_dir else name
                try:
                    info = os.lstat(path)  # symlinks are skipped: one may lead out of the workspace
                    rel.encode("utf-8")  # the store keeps UTF-8 names; others are rare: skip them
                except (OSError, UnicodeEncodeError):
                    continue
                if stat.S_ISREG(info.st_mode):
                    yield _Seen(path, rel, info.st_mtime_ns, info.st_size)


def _run_jobs(jobs: list[_Job]) -> Iterator[list[_Result]]:
    """Results in batches: in this process for a few files, else spread over worker
    processes in chunks so each task carries enough work to pay for its IPC."""
    if len(jobs) < PARALLEL_MIN_FILES:
        yield _parse_chunk(jobs)
        return
    workers = os.cpu_count() or 1
    chunk = max(1, min(64, len(jobs) // (workers * 4)))
    # forkserver, not fork: the agent runs threads, and forking a threaded process can deadlock.
    context = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_ignore_interrupts)
    futures = {pool.submit(_parse_chunk, jobs[i : i + chunk]): i for i in range(0, len(jobs), chunk)}
    try:
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool:  # a worker died (out of memory, a grammar crash): finish here
                start = futures[future]
                yield _parse_chunk(jobs[start : start + chunk])
    finally:
        # Ctrl-C or a failure: drop queued work instead of waiting for all of it.
        pool.shutdown(wait=False, cancel_futures=True)


def _ignore_interrupts() -> None:
    # Ctrl-C reaches the whole process group; the parent decides what happens.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _parse_chunk(jobs: list[_Job]) -> list[_Result]:
    return [_parse_one(*job) for job in jobs]


def _parse_one(path: str, rel: str, old_digest: str) -> _Result:
    try:
        with open(path, "rb") as f:
            source = f.read(MAX_FILE_BYTES + 1)
    except OSError:
        return rel, "", None
    digest = hashlib.blake2b(source, digest_size=16).hexdigest()
    if digest == old_digest:
        return rel, digest, None
    try:
        return rel, digest, extract(rel, source)
    except Exception:  # noqa: BLE001 — one file the parser chokes on must not stop the index
        return rel, digest, FileTags(rel, language_for(rel), ())


def _exclude_from_git(workspace_root: Path, line: str) -> None:
    """Add `line` (made relative to the repository root) to the enclosing git repository's
    info/exclude once, so the cache never shows up in `git status`. .gitignore is the
    user's file and is left alone."""
    for repo_root in (workspace_root, *workspace_root.parents):
        git = repo_root / ".git"
        if git.exists():
            break
    else:
        return
    git_dir = _git_dir(git)
    if git_dir is None:
        return
    prefix = workspace_root.relative_to(repo_root).as_posix()
    entry = line if prefix == "." else f"{prefix}/{line}"
    exclude = git_dir / "info" / "exclude"
    try:
        existing = exclude.read_text(errors="replace") if exclude.exists() else ""
        if entry in existing.splitlines():
            return
        exclude.parent.mkdir(parents=True, exist_ok=True)
        separator = "" if not existing or existing.endswith("\n") else "\n"
        with exclude.open("a") as f:
            f.write(f"{separator}{entry}\n")
    except OSError:
        pass  # a read-only repository only means the cache shows in `git status`


def _git_dir(git: Path) -> Path | None:
    """The directory holding info/exclude: `.git` itself, or for worktrees and submodules
    (where `.git` is a "gitdir: ..." file) the common git directory it points to."""
    if git.is_dir():
        return git
    try:
        text = git.read_text(errors="replace").strip()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    git_dir = (git.parent / text.removeprefix("gitdir:").strip()).resolve()
    common = git_dir / "commondir"
    if common.is_file():
        git_dir = (git_dir / common.read_text().strip()).resolve()
    return git_dir
