"""Repository index speed on a corpus copied from the installed packages.

    python bench/index.py [--packages rich pip setuptools ...]

Times a cold index, a warm update with nothing changed, an update after one file's
content changed, and the stat-only staleness check; reports files/s and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kimicode.index.indexer import RepoIndex
from kimicode.workspace import Workspace

DEFAULT_PACKAGES = [
    "textual", "rich", "pip", "setuptools", "pydantic", "openai", "pygments", "_pytest", "git", "tree_sitter",
]
SUFFIXES = {".py", ".js", ".ts", ".tsx", ".mjs"}


def build_corpus(root: Path, packages: list[str]) -> dict[str, int]:
    """Copy the sources of the installed `packages` into `root`; count files by suffix."""
    site = Path(sysconfig.get_paths()["purelib"])
    counts: dict[str, int] = {}
    for name in packages:
        source = site / name
        if not source.is_dir():
            continue
        for path in source.rglob("*"):
            if path.suffix in SUFFIXES and path.is_file() and "__pycache__" not in path.parts:
                target = root / path.relative_to(site)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                counts[path.suffix] = counts.get(path.suffix, 0) + 1
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return counts


class WorkerPeak:
    """Highest VmHWM among descendant processes, sampled from /proc (Linux). getrusage's
    children figure misses the pool workers: they are children of the forkserver, which
    outlives the benchmark."""

    def __init__(self, interval: float = 0.02):
        self.peak_kb = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WorkerPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for pid in _descendants(os.getpid()):
                self.peak_kb = max(self.peak_kb, _vm_hwm_kb(pid))


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def timed(action: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", nargs="+", default=DEFAULT_PACKAGES)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kimicode-index-bench-") as tmp:
        root = Path(tmp)
        counts = build_corpus(root, args.packages)
        workspace = Workspace(root)
        with WorkerPeak() as workers:
            cold_s, cold = timed(lambda: RepoIndex(workspace).update())
            warm_s, warm = timed(lambda: RepoIndex(workspace).update())
            index = RepoIndex(workspace)
            target = next(root.rglob("*.py"))
            with target.open("a") as f:
                f.write("\n\ndef bench_added():\n    pass\n")
            edit_s, edited = timed(index.update)
            check_s, stale = timed(index.changed_since_last_update)
            index.close()
        self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

    files = cold.files
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, packages: {' '.join(args.packages)}")
    print(f"corpus: {files} files ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}); "
          f"{cold.defs} defs, {cold.refs} refs; languages {cold.languages}")
    print(f"{'phase':<28}{'seconds':>9}{'parsed':>8}{'files/s':>10}")
    for phase, seconds, stats in (
        ("cold index", cold_s, cold),
        ("warm update, no change", warm_s, warm),
        ("update, one file edited", edit_s, edited),
    ):
        print(f"{phase:<28}{seconds:>9.3f}{stats.parsed:>8}{files / seconds:>10.0f}")
    print(f"{'changed_since_last_update':<28}{check_s:>9.3f}{'':>8}{files / check_s:>10.0f}  (stale={stale})")
    print(f"peak RSS: self {self_kb / 1024:.0f} MiB, largest worker {workers.peak_kb / 1024:.0f} MiB, "
          f"reaped children {children_kb / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
