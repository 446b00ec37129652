"""Verification: after the model says it is done with an edit, run the project's tests.

Before the agent's first change in a session the full suite runs once as a baseline,
so tests that were already failing are not blamed on the agent. After a change the
narrowest relevant tests run first, then the full suite; new failures go back to the
model as a short report and the turn continues, until they pass or a budget or the
round limit stops it. The run itself is the shell tool's (process group, timeout,
output cap); whether it may run is the approval policy's call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from kimicode.agent.testing import TestCommand, TestFailure, TestOutcome, parse_test_output
from kimicode.tools.base import ToolContext
from kimicode.tools.shell import Shell, ShellParams
from kimicode.tools.shell_syntax import ShellSyntaxError, split_commands

TEST_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class TestRun:
    command: str
    narrowed: bool
    outcome: TestOutcome
    new_failures: list[TestFailure]  # failing now but not in the baseline
    already_failing: list[str]  # baseline failures still failing

    __test__ = False  # not a pytest test class, despite the name

    @property
    def ok(self) -> bool:
        """No failure the agent caused (pre-existing ones may remain)."""
        return self.outcome.passed or not self.new_failures

    def feedback(self) -> str:
        """The report for the model: its new failures; pre-existing ones only named."""
        summary = dataclasses.replace(self.outcome, failures=self.new_failures).summary()
        if self.already_failing:
            names = ", ".join(self.already_failing[:20])
            summary += f"\nAlready failing before your changes (not yours to fix unless asked): {names}"
        return summary

    def preexisting(self) -> str:
        """The report of failures that were there before the agent's changes."""
        still = set(self.already_failing)
        return dataclasses.replace(self.outcome, failures=[f for f in self.outcome.failures if f.name in still]).summary()

    def report(self) -> dict[str, object]:
        """What the headless result says about the tests."""
        return {
            "command": self.command,
            "passed": self.outcome.passed,
            "counts": self.outcome.counts,
            "failing": [f.name for f in self.outcome.failures],
            "new_failures": [f.name for f in self.new_failures],
        }


class Verifier:
    def __init__(self, test: TestCommand):
        self.test = test
        self.rounds = 0  # failing rounds this turn
        self.told_preexisting = False  # the model was shown this turn's pre-existing failures
        self.last: TestRun | None = None
        self._verified_files: set[Path] = set()  # the agent's changed files as of the last pass
        self._shell_changes = False  # a command that may change files ran since then
        self.baseline: TestOutcome | None = None  # the suite before the agent's first change

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
        # Narrowing appends arguments: only safe on a single command (not `pytest | tail`).
        narrowed = self.test.narrowed(changed) if changed and _is_simple(self.test.command) else None
        full = (self.test.command, False)
        return [(narrowed, True), full] if narrowed and narrowed != self.test.command else [full]

    async def run(self, command: str, narrowed: bool, ctx: ToolContext) -> TestRun:
        outcome = await self._execute(command, ctx)
        known = {f.name for f in self.baseline.failures} if self.baseline else set()
        new = [f for f in outcome.failures if f.name not in known]
        baseline_failed_unnamed = self.baseline is not None and not self.baseline.passed and not known
        if not outcome.passed and not outcome.failures and (outcome.note or not baseline_failed_unnamed):
            # Failed, but no test could be named (a crash, a timeout, an unknown runner).
            new = [TestFailure("(test run)", outcome.note or f"exit code {outcome.exit_code}", "")]
        still = sorted(known & {f.name for f in outcome.failures})
        self.last = TestRun(command, narrowed, outcome, new, still)
        return self.last

    async def run_baseline(self, ctx: ToolContext) -> TestOutcome:
        self.baseline = await self._execute(self.test.command, ctx)
        return self.baseline

    async def _execute(self, command: str, ctx: ToolContext) -> TestOutcome:
        result = await Shell().execute(ShellParams(command=command, timeout=TEST_TIMEOUT_S), ctx)
        exit_code = result.display.get("exit_code")
        output = result.display.get("output", result.output)
        # The shell tool marks only a timeout (or a failure to start) as an error.
        return parse_test_output(self.test.framework, output, -1 if exit_code is None else exit_code,
                                 timed_out=result.is_error)


def _is_simple(command: str) -> bool:
    try:
        commands = split_commands(command)
    except ShellSyntaxError:
        return False
    return len(commands) == 1 and not commands[0].redirects
