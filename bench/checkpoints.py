"""Checkpoint timings on a committed repository of N small text files (median of R runs).

    python bench/checkpoints.py [--files 5000] [--runs 10] [--seed 0]

Times: the first snapshot (empty store), a snapshot with nothing changed, a snapshot
after modifying 10 files, and a restore of a checkpoint 10 files away (which includes
the "before undo" snapshot it takes first).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kimicode.agent.checkpoints import CheckpointStore  # noqa: E402

GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}


def build_repo(root: Path, files: int, rng: random.Random) -> list[Path]:
    paths = []
    for i in range(files):
        path = root / f"d{rng.randrange(20)}" / f"s{rng.randrange(10)}" / f"file{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"line {rng.random()}\n" for _ in range(rng.randint(1, 40))))
        paths.append(path)
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True)
    return paths


def timed(runs: int, action, setup=lambda: None) -> list[float]:
    """Milliseconds of `action` per run after one warm-up, `setup` untimed before each."""
    times = []
    for run in range(runs + 1):
        setup()
        started = time.perf_counter()
        action()
        if run:
            times.append((time.perf_counter() - started) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root, store_dir = Path(tmp, "repo"), Path(tmp, "store.git")
        root.mkdir()
        paths = build_repo(root, args.files, rng)
        store = CheckpointStore(root, store_dir)

        def modify_ten() -> None:
            for path in rng.sample(paths, 10):
                path.write_text(f"edited {rng.random()}\n")

        rows = [("first snapshot", timed(args.runs, lambda: store.create("first", 0),
                                         setup=lambda: shutil.rmtree(store_dir, ignore_errors=True)))]
        rows.append(("snapshot, nothing changed", timed(args.runs, lambda: store.create("same", 0))))
        rows.append(("snapshot, 10 files changed", timed(args.runs, lambda: store.create("ten", 0), setup=modify_ten)))
        base = store.create("base", 0)
        rows.append(("restore 10 files away", timed(args.runs, lambda: store.restore(base), setup=modify_ten)))

    git_version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"{args.files} files, median of {args.runs} runs after a warm-up; "
          f"Python {platform.python_version()}, {git_version}, {platform.system()} {platform.machine()}")
    print(f"{'operation':<28} {'median ms':>10} {'min':>8} {'max':>8}")
    for name, times in rows:
        print(f"{name:<28} {statistics.median(times):>10.1f} {min(times):>8.1f} {max(times):>8.1f}")


if __name__ == "__main__":
    main()
