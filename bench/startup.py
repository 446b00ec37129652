"""Start-up time of `kimicode --help` (median of N runs) and its heaviest imports.

    python bench/startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    command = [shutil.which("kimicode") or sys.exit("kimicode is not installed"), "--help"]
    subprocess.run(command, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append((time.perf_counter() - started) * 1e3)
    print(f"kimicode --help: median {statistics.median(times):.1f} ms, min {min(times):.1f}, max {max(times):.1f} ({args.runs} runs)")

    probe = "import sys; sys.argv=['kimicode','--help']\nfrom kimicode.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass"
    trace = subprocess.run([sys.executable, "-X", "importtime", "-c", probe], capture_output=True, text=True).stderr
    rows, imported = [], set()
    for line in trace.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        imported.add(name.strip())
        if not name.startswith("  "):  # one leading space: imported by the program itself
            rows.append((int(cumulative), name.strip()))
    print("top-level imports by cumulative time (us):")
    for cumulative, name in sorted(rows, reverse=True)[:8]:
        print(f"  {cumulative:>8}  {name}")
    heavy = [m for m in ("torch", "textual", "openai", "pydantic", "httpx2") if m in imported]
    print(f"heavy modules imported: {', '.join(heavy) or 'none'}")

if __name__ == "__main__":
    main()
