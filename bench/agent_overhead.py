"""Agent overhead per step: wall time of a turn minus the time spent waiting on the model.

The model is the fake OpenAI-compatible server on 127.0.0.1 answering instantly, so what
is left is the loop itself: request building, history normalisation, stream parsing,
approval checks, tool dispatch and the tool's own work.

    python bench/agent_overhead.py [--steps 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kimicode.agent.loop import Agent, Limits  # noqa: E402
from kimicode.approval import ApprovalPolicy  # noqa: E402
from kimicode.backends.base import ModelInfo  # noqa: E402
from kimicode.backends.openai_compat import OpenAICompatBackend, RetryPolicy  # noqa: E402
from kimicode.backends.repair import normalize_history  # noqa: E402
from kimicode.tools.base import ToolContext, ToolRegistry  # noqa: E402
from kimicode.tools.plan import UpdatePlan  # noqa: E402
from kimicode.tools.registry import builtin_tools  # noqa: E402
from kimicode.workspace import Workspace  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer, Reply, ToolCall  # noqa: E402


class TimedBackend:
    """Wraps a backend and adds up the time spent inside its stream."""

    def __init__(self, inner):
        self.inner, self.info, self.waiting = inner, inner.info, 0.0

    async def stream(self, request):
        mark = time.perf_counter()
        async for event in self.inner.stream(request):
            self.waiting += time.perf_counter() - mark
            yield event
            mark = time.perf_counter()
        self.waiting += time.perf_counter() - mark

    async def aclose(self):
        await self.inner.aclose()


CALLS = {
    "update_plan": {"items": [{"step": "measure", "status": "in_progress"}]},
    "read_file": {"path": "module.py"},
    "shell": {"command": "true"},
}


async def one_turn(server, root: Path, tool: str, steps: int) -> tuple[float, float, float]:
    server.script(*[Reply(text="step", tool_calls=[ToolCall(tool, CALLS[tool])]) for _ in range(steps - 1)],
                  Reply(text="done"))
    backend = TimedBackend(OpenAICompatBackend(base_url=server.base_url, api_key="k", info=ModelInfo("bench"),
                                               retry=RetryPolicy(1, 0, 0)))
    agent = Agent(backend, ToolRegistry([*builtin_tools(), UpdatePlan()]), ApprovalPolicy("auto", root),
                  ToolContext(Workspace(root)), "system", Limits(max_steps=steps + 1))
    started = time.perf_counter()
    async for _ in agent.run("go"):
        pass
    wall = time.perf_counter() - started
    await backend.aclose()
    return wall, backend.waiting, encode_ms(agent)


def encode_ms(agent: Agent) -> float:
    """Client-side cost hidden in "model wait": preparing and encoding the last request."""
    times = []
    for _ in range(20):
        mark = time.perf_counter()
        json.dumps({"messages": normalize_history(agent.messages), "tools": agent.tools.schemas()})
        times.append((time.perf_counter() - mark) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    with FakeOpenAIServer() as server, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "module.py").write_text("".join(f"def f{i}():\n    return {i}\n" for i in range(200)))
        asyncio.run(one_turn(server, root, "update_plan", 5))  # warm-up
        print(f"{'tool':<12} {'steps':>6} {'overhead/step ms (median)':>26} {'min':>7} {'max':>7} "
              f"{'model wait/step ms':>19} {'encode last request ms':>23}")
        for tool in CALLS:
            per_step, waits, encodes = [], [], []
            for _ in range(args.repeats):
                wall, waiting, encode = asyncio.run(one_turn(server, root, tool, args.steps))
                per_step.append((wall - waiting) / args.steps * 1e3)
                waits.append(waiting / args.steps * 1e3)
                encodes.append(encode)
            print(f"{tool:<12} {args.steps:>6} {statistics.median(per_step):>26.3f} {min(per_step):>7.3f} "
                  f"{max(per_step):>7.3f} {statistics.median(waits):>19.3f} {statistics.median(encodes):>23.3f}")
    print(f"python {sys.version.split()[0]}, commit {commit}, {args.repeats} runs each")


if __name__ == "__main__":
    main()
