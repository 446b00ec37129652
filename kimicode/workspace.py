"""The workspace guard: every file path a tool touches is resolved here.

Paths are resolved to real paths (symlinks followed) and must stay under the
workspace root; `..`, absolute paths and symlinks that leave it are refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pathspec

# Folders a tool may not write even inside the workspace, at any depth: git internals
# run hooks, and .kimicode holds the settings that decide what the agent may do.
_PROTECTED_DIRS = {".git": "edit files in the work tree instead", ".kimicode": "ask the user to change kimicode's settings"}


class PathError(Exception):
    """A path the workspace refuses; the message is written for the model."""


class Workspace:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise PathError(f"workspace {root} is not a directory")

    def resolve(self, path: str, *, for_write: bool = False) -> Path:
        """The real path for `path` (relative to the root, or absolute inside it)."""
        if not path or "\0" in path:
            raise PathError(f"invalid path {path!r}")
        candidate = Path(os.path.expanduser(path))
        if not candidate.is_absolute():
            candidate = self.root / candidate
        real = Path(os.path.realpath(candidate))
        if real != self.root and self.root not in real.parents:
            via_link = Path(os.path.normpath(candidate)) != real
            why = "it resolves through a symlink to" if via_link else "it is"
            raise PathError(
                f"{path} is outside the workspace ({why} {real}); only paths under {self.root} are allowed"
            )
        if for_write:
            for part in real.relative_to(self.root).parts:
                # casefold: on case-insensitive file systems .GIT is .git
                if (hint := _PROTECTED_DIRS.get(part.casefold())) is not None:
                    raise PathError(f"{path} is inside {part}, which tools may not write; {hint}")
        return real

    def relative(self, path: Path) -> str:
        """`path` relative to the root, with forward slashes ("." for the root)."""
        rel = path.relative_to(self.root).as_posix()
        return rel or "."

    def iter_files(self, start: Path | None = None, *, include_ignored: bool = False) -> Iterator[Path]:
        """Files under `start` (default: the root) in sorted order, skipping `.git` and,
        unless asked, anything .gitignore / .git/info/exclude ignore."""
        start = start or self.root
        if start.is_file():
            yield start
            return
        for dirpath, dirnames, filenames in self.walk(start, include_ignored=include_ignored):
            for name in filenames:
                yield dirpath / name

    def walk(self, start: Path, *, include_ignored: bool = False) -> Iterator[tuple[Path, list[str], list[str]]]:
        """Like os.walk (top-down, sorted, `.git` and ignored entries left out): clearing
        or trimming the yielded `dirs` list stops the walk from descending into them."""
        rules = [] if include_ignored else self._ignore_rules_above(start)
        rel = start.relative_to(self.root).as_posix()
        yield from self._walk_dir(start, "" if rel == "." else rel, rules, include_ignored)

    def _walk_dir(self, directory: Path, rel_dir: str, rules: list[_Rule], include_ignored: bool):
        # Paths are matched as strings relative to each rule's folder: pathlib per entry
        # was most of an incremental index update's time.
        if not include_ignored:
            local = _load_ignore(directory / ".gitignore")
            if local is not None:
                rules = [*rules, (f"{rel_dir}/" if rel_dir else "", "", local)]
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        dirs, files = [], []
        for entry in entries:
            if entry.name == ".git" or (entry.name == "cache" and directory.name == ".kimicode"):
                continue  # git internals; kimicode's own index cache
            is_dir = entry.is_dir(follow_symlinks=False)
            if rules and _ignored(f"{rel_dir}/{entry.name}" if rel_dir else entry.name, is_dir, rules):
                continue
            (dirs if is_dir else files).append(entry.name)
        yield directory, dirs, files
        for name in dirs:
            yield from self._walk_dir(directory / name, f"{rel_dir}/{name}" if rel_dir else name, rules, include_ignored)

    def _ignore_rules_above(self, start: Path) -> list[_Rule]:
        """The ignore files that apply above `start`: from the git repository's top (which
        may be above the workspace, in a monorepo) down, and its info/exclude."""
        rules: list[_Rule] = []
        top = _repository_top(self.root)
        if top is not None:
            exclude = _load_ignore(top / ".git" / "info" / "exclude")
            above = self.root.relative_to(top).as_posix()
            prefix = "" if above == "." else f"{above}/"
            if exclude is not None:
                rules.append(("", prefix, exclude))
            directory = top
            for part in self.root.relative_to(top).parts:  # .gitignore files above the workspace
                spec = _load_ignore(directory / ".gitignore")
                if spec is not None:
                    inner = self.root.relative_to(directory).as_posix()
                    rules.append(("", f"{inner}/", spec))
                directory = directory / part
        directory, rel = self.root, ""
        for part in start.relative_to(self.root).parts:
            spec = _load_ignore(directory / ".gitignore")
            if spec is not None:
                rules.append((f"{rel}/" if rel else "", "", spec))
            directory, rel = directory / part, f"{rel}/{part}" if rel else part
        return rules


# (prefix to strip from a workspace-relative path, prefix to add, patterns): the path as the
# ignore file's own folder sees it.
_Rule = tuple[str, str, pathspec.PathSpec]


def _repository_top(root: Path) -> Path | None:
    for folder in (root, *root.parents):
        if (folder / ".git").exists():
            return folder
    return None


def _load_ignore(path: Path) -> pathspec.PathSpec | None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _ignored(rel: str, is_dir: bool, rules: list[_Rule]) -> bool:
    # The last matching rule wins across nested .gitignore files, as in git.
    verdict = False
    suffix = "/" if is_dir else ""
    for strip, add, spec in rules:
        result = spec.check_file(add + rel[len(strip) :] + suffix)
        if result.include is not None:
            verdict = result.include
    return verdict
