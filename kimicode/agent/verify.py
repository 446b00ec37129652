"""Verification: after the model says it is done with an edit, run the project's tests.

The narrowest relevant tests run first, then the full suite; failures go back to the
model as a short report and the turn continues, until the tests pass or a budget or
the round limit stops it. The run itself is the shell tool's (process group, timeout,
output cap); whether it may run is the approval policy's call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
        self._verified_files: set[Path] = set()  # the agent's changed files as of the last pass
        self._shell_changes = False  # a command that may change files ran since then

    def unverified(self, changed_files: set[Path]) -> set[Path] | None:
        """Files changed since the tests last passed (maybe empty if only a shell command
        changed things), or None when the tests need not run."""
        unverified = changed_files - self._verified_files
        return unverified if unverified or self._shell_changes else None

    def mark_verified(self, changed_files: set[Path]) -> None:
        self._verified_files = set(changed_files)
        self._shell_changes = False

    def note_command(self, command: str, exit_code: int | None, read_only: bool, changed_files: set[Path]) -> None:
        """A shell command the model ran: it may have changed files, or it was the model
        running the full suite itself, successfully (then no rerun is needed)."""
        if command.strip() == self.test.command and exit_code == 0:
            self.mark_verified(changed_files)
        elif not read_only:
            self._shell_changes = True

    def commands(self, changed: list[str]) -> list[tuple[str, bool]]:
        """(command, narrowed) pairs to run in order: the relevant tests, then everything."""
        narrowed = self.test.narrowed(changed) if changed else None
        full = (self.test.command, False)
        return [(narrowed, True), full] if narrowed and narrowed != self.test.command else [full]

    async def run(self, command: str, narrowed: bool, ctx: ToolContext) -> TestRun:
        result = await Shell().execute(ShellParams(command=command, timeout=TEST_TIMEOUT_S), ctx)
        exit_code = result.display.get("exit_code")
        output = result.display.get("output", result.output)
        timed_out = result.is_error and exit_code is None
        outcome = parse_test_output(self.test.framework, output, -1 if exit_code is None else exit_code,
                                    timed_out=timed_out)
        self.last = TestRun(command, narrowed, outcome)
        return self.last
