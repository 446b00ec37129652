"""Verification: after the model says it is done with an edit, run the project's tests.

The narrowest relevant tests run first, then the full suite; failures go back to the
model as a short report and the turn continues, until the tests pass or a budget or
the round limit stops it. The run itself is the shell tool's (process group, timeout,
output cap); whether it may run is the approval policy's call.
"""

from __future__ import annotations

from dataclasses import dataclass

from kimicode.agent.testing import TestCommand, TestOutcome, parse_test_output
from kimicode.tools.base import ToolContext
from kimicode.tools.shell import Shell, ShellParams

TEST_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class TestRun:
    command: str
    narrowed: bool
    outcome: TestOutcome

    def report(self) -> dict[str, object]:
        """What the headless result says about the tests."""
        return {
            "command": self.command,
            "passed": self.outcome.passed,
            "counts": self.outcome.counts,
            "failing": [f.name for f in self.outcome.failures],
        }


class Verifier:
    def __init__(self, test: TestCommand):
        self.test = test
        self.rounds = 0  # failing rounds this turn
        self.last: TestRun | None = None

    def commands(self, changed: list[str]) -> list[tuple[str, bool]]:
        """(command, narrowed) pairs to run in order: the relevant tests, then everything."""
        narrowed = self.test.narrowed(changed) if changed else None
        full = (self.test.command, False)
        return [(narrowed, True), full] if narrowed and narrowed != self.test.command else [full]

    def counts_as_run(self, command: str) -> bool:
        """The model ran the full suite itself (a later pass of it needs no rerun)."""
        return command.strip() == self.test.command

    async def run(self, command: str, narrowed: bool, ctx: ToolContext) -> TestRun:
        result = await Shell().execute(ShellParams(command=command, timeout=TEST_TIMEOUT_S), ctx)
        exit_code = result.display.get("exit_code")
        output = result.display.get("output", result.output)
        timed_out = result.is_error and exit_code is None
        outcome = parse_test_output(self.test.framework, output, -1 if exit_code is None else exit_code,
                                    timed_out=timed_out)
        self.last = TestRun(command, narrowed, outcome)
        return self.last
