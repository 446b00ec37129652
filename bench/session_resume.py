"""Resume time: replaying a session transcript of N events (median of 10 loads).

    python bench/session_resume.py [--events 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kimicode.agent.session import SessionLog, load_session  # noqa: E402


def write_session(path: Path, events: int, rng: random.Random) -> None:
    """A realistic mix: one user prompt, then assistant tool calls, tool results of
    0.2-8 KB, usage records."""
    log = SessionLog(path.stem, path)
    log.append("meta", id=path.stem, cwd="/work/project", model="kimi-k2-0905-preview")
    log.append("message", message={"role": "user", "content": "fix the failing tests"})
    for i in range(events - 2):
        kind = i % 3
        if kind == 0:
            call = {"id": f"functions.read_file:{i}", "type": "function",
                    "function": {"name": "read_file", "arguments": json.dumps({"path": f"src/m{i}.py"})}}
            log.append("message", message={"role": "assistant", "content": "Looking.", "tool_calls": [call]})
        elif kind == 1:
            body = "".join(rng.choice("abcdefghij \n") for _ in range(rng.randint(200, 8000)))
            log.append("message", message={"role": "tool", "tool_call_id": f"functions.read_file:{i - 1}", "content": body})
        else:
            log.append("usage", usage=[rng.randint(1000, 90000), rng.randint(10, 500), 0], cost_usd=0.001)
    log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        write_session(path, args.events, random.Random(0))
        load_session(path)  # warm the page cache
        times = []
        for _ in range(10):
            started = time.perf_counter()
            state = load_session(path)
            times.append((time.perf_counter() - started) * 1e3)
        size_mb = path.stat().st_size / 1e6
    print(f"{'events':>7} {'file MB':>8} {'messages':>9} {'load ms (median)':>17} {'min':>7} {'max':>7}")
    print(f"{args.events:>7} {size_mb:>8.2f} {len(state.messages):>9} {statistics.median(times):>17.2f} "
          f"{min(times):>7.2f} {max(times):>7.2f}")


if __name__ == "__main__":
    main()
