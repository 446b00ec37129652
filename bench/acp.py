"""Spawn-to-`initialize` time of `kimicode acp`, as an editor starts it (median of N).

    python bench/acp.py [--runs 10]

Run from the repository root. Each run spawns `python -m kimicode acp` with pipes,
writes one `initialize` request and times until its response line arrives.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}}) + "\n"


def spawn_to_initialize(command: list[str]) -> float:
    env = {**os.environ}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as editors run it: bytecode cached
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        proc.stdin.write(INITIALIZE.encode())
        proc.stdin.flush()
        response = json.loads(proc.stdout.readline())
        elapsed = time.perf_counter() - started
        assert response["result"]["agentInfo"]["name"] == "kimicode", response
        return elapsed * 1e3
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    command = [sys.executable, "-m", "kimicode", "acp"]
    spawn_to_initialize(command)  # warm-up: file cache, bytecode
    times = sorted(spawn_to_initialize(command) for _ in range(args.runs))
    baseline = sorted(_python_start() for _ in range(args.runs))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"{'metric':44} {'median':>8} {'min':>8} {'max':>8}  target")
    print(f"{'spawn -> initialize response (ms)':44} {statistics.median(times):8.0f} {times[0]:8.0f} {times[-1]:8.0f}  < 300")
    print(f"{'  context: python -c pass (ms)':44} {statistics.median(baseline):8.0f} {baseline[0]:8.0f} {baseline[-1]:8.0f}")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, commit {commit}, "
          f"{args.runs} runs")


def _python_start() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.perf_counter() - started) * 1e3


if __name__ == "__main__":
    main()
