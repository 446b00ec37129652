"""Approval policy: mode + rules + a hard deny-list that no mode overrides.

Rules are strings: a tool name (`write_file`) or a shell command prefix matched
word by word (`shell:git status`). A shell command is allowed by rules only if
every simple command in it is, so an allowed prefix cannot smuggle another one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kimicode.config import ApprovalMode
from kimicode.tools.shell_risk import assess, assess_command
from kimicode.tools.shell_syntax import ShellSyntaxError, SimpleCommand, split_commands

MODES: tuple[ApprovalMode, ...] = ("ask", "auto-edit", "auto", "yolo", "plan")
_EDIT_KINDS = {"edit", "delete", "move"}
_SAFE_KINDS = {"read", "search", "think"}
# Commands whose second word is the action: a rule for them keeps two words.
_TWO_WORD_COMMANDS = {
    "git", "npm", "pnpm", "yarn", "cargo", "go", "docker", "kubectl", "make", "pip", "uv",
    "poetry", "bun", "deno", "dotnet", "mvn", "gradle", "brew", "apt", "apt-get", "systemctl",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Literal["allow", "ask", "deny"]
    reason: str
    rules: tuple[str, ...] = ()  # what "allow always" would persist


class RuleStore:
    """Allow-rules the user granted with "allow always", kept per project."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            return []  # a damaged file grants nothing; it is rewritten on the next grant
        allow = data.get("allow", []) if isinstance(data, dict) else []
        return [rule for rule in allow if isinstance(rule, str)]

    def add(self, rules: list[str]) -> None:
        current = self.load()
        merged = current + [rule for rule in rules if rule not in current]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".permissions-")
        os.fchmod(fd, 0o644)  # mkstemp makes it 0600
        with os.fdopen(fd, "w") as f:
            json.dump({"allow": merged}, f, indent=2)
            f.write("\n")
        os.replace(tmp, self.path)


class ApprovalPolicy:
    def __init__(
        self,
        mode: ApprovalMode,
        workspace: Path,
        allow: list[str] = (),  # type: ignore[assignment]
        deny: list[str] = (),  # type: ignore[assignment]
        store: RuleStore | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown approval mode {mode!r}; choose one of {', '.join(MODES)}")
        self.mode: ApprovalMode = mode
        self.workspace = workspace
        self._store = store
        self._allow = list(allow) + (store.load() if store else [])
        self._deny = list(deny)

    def remember(self, rules: tuple[str, ...]) -> None:
        """Grant `rules` from now on, and persist them when a store is set."""
        self._allow += [rule for rule in rules if rule not in self._allow]
        if self._store:
            self._store.add(list(rules))

    def check(self, tool_name: str, kind: str, arguments: dict[str, Any]) -> Verdict:
        if tool_name in self._deny:
            return Verdict("deny", f"{tool_name} is denied by a rule")
        if kind == "execute" and isinstance(arguments.get("command"), str):
            return self._check_shell(arguments["command"], tool_allowed=tool_name in self._allow)
        if kind in _SAFE_KINDS:
            return Verdict("allow", "reads only")
        if self.mode == "plan":
            return Verdict("deny", "plan mode is read-only: propose the change in the plan instead")
        if tool_name in self._allow:
            return Verdict("allow", "allowed by a rule")
        if self.mode in ("yolo", "auto") or (self.mode == "auto-edit" and kind in _EDIT_KINDS):
            return Verdict("allow", f"{self.mode} mode")
        what = "changes the workspace" if kind in _EDIT_KINDS else "is an MCP server's tool: it can do whatever its server does"
        return Verdict("ask", f"{tool_name} {what}", (tool_name,))

    def _check_shell(self, script: str, *, tool_allowed: bool) -> Verdict:
        risk = assess(script, self.workspace)
        if risk.risk == "forbidden":
            return Verdict("deny", f"refused: {risk.reason}")
        try:  # wordless commands (a bare `> file`, `x=1`) match no rule and need none
            commands = [cmd for cmd in split_commands(script) if cmd.words]
        except ShellSyntaxError:
            commands = []
        if any(self._matches(cmd, self._deny) for cmd in commands):
            return Verdict("deny", "a command is denied by a rule")
        if risk.risk == "read_only":
            return Verdict("allow", "read-only command")
        if self.mode == "plan":
            return Verdict("deny", "plan mode is read-only: only read-only commands may run")
        unmatched = [cmd for cmd in commands if not self._matches(cmd, self._allow)]
        if tool_allowed or (commands and not unmatched):
            return Verdict("allow", "allowed by a rule")
        if self.mode == "yolo" or (self.mode == "auto" and risk.risk == "normal"):
            return Verdict("allow", f"{self.mode} mode")
        rules = tuple(dict.fromkeys(
            shell_rule(cmd) for cmd in unmatched if assess_command(cmd, self.workspace).risk != "read_only"
        ))
        reason = risk.reason if risk.risk == "destructive" else "runs a shell command"
        return Verdict("ask", reason, rules)

    @staticmethod
    def _matches(cmd: SimpleCommand, rules: list[str]) -> bool:
        return any(
            rule.startswith("shell:") and _is_word_prefix(rule[6:].split(), cmd.words) for rule in rules
        )


def shell_rule(cmd: SimpleCommand) -> str:
    """The rule "allow always" suggests for a command: `git push origin x` -> `shell:git push`."""
    words = list(cmd.words)
    size = 1
    if words[:1] and words[0] in _TWO_WORD_COMMANDS and len(words) > 1 and not words[1].startswith("-"):
        size = 2
    elif len(words) >= 3 and words[0].startswith("python") and words[1] == "-m":
        size = 3
    return "shell:" + " ".join(words[:size])


def _is_word_prefix(prefix: list[str], words: tuple[str, ...]) -> bool:
    return bool(prefix) and list(words[: len(prefix)]) == prefix
