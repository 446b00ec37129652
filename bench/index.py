"""Repository index speed on a corpus copied from the installed packages.

    python bench/index.py [--packages rich pip setuptools ...] [--extra /usr/lib/node_modules/npm ...]

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


def copy_tree(source: Path, root: Path, counts: dict[str, int]) -> None:
    """Add another source tree (e.g. a JavaScript one) to the corpus under its own name."""
    for path in source.rglob("*"):
        if path.suffix in SUFFIXES and path.is_file():
            target = root / source.name / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            counts[path.suffix] = counts.get(path.suffix, 0) + 1


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


def median_run(runs: list[tuple[float, object]]) -> tuple[float, object]:
    return sorted(runs, key=lambda run: run[0])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", nargs="+", default=DEFAULT_PACKAGES)
    parser.add_argument("--extra", nargs="*", type=Path, default=[], help="more source trees to copy in")
    parser.add_argument("--runs", type=int, default=3, help="runs per phase; the median is shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kimicode-index-bench-") as tmp:
        root = Path(tmp)
        counts = build_corpus(root, args.packages)
        for extra in args.extra:
            copy_tree(extra, root, counts)
        workspace = Workspace(root)
        sources = sorted(root.rglob("*.py"))
        with WorkerPeak() as workers:
            cold_runs = []
            for _ in range(args.runs):
                shutil.rmtree(root / ".kimicode", ignore_errors=True)
                cold_runs.append(timed(lambda: RepoIndex(workspace).update()))
            cold_s, cold = median_run(cold_runs)
            index = RepoIndex(workspace)
            warm_s, warm = median_run([timed(index.update) for _ in range(args.runs)])
            edits = []
            for target in sources[: args.runs]:
                with target.open("a") as f:
                    f.write("\n\ndef bench_added():\n    pass\n")
                edits.append(timed(index.update))
            edit_s, edited = median_run(edits)
            check_s, stale = median_run([timed(index.changed_since_last_update) for _ in range(args.runs)])
            index.close()
        self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

    files = cold.files
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, packages: {' '.join(args.packages)}"
          f"{', extra: ' + ' '.join(map(str, args.extra)) if args.extra else ''}; median of {args.runs} runs")
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
