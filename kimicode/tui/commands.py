"""Slash commands: the table the prompt completes from and `/help` prints."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SlashCommand:
    name: str  # without the slash
    usage: str  # argument synopsis, "" if none
    help: str


SLASH_COMMANDS: tuple[SlashCommand, ...] = (
    SlashCommand("help", "", "Show commands and keys"),
    SlashCommand("model", "[NAME]", "Show the model, or switch to NAME"),
    SlashCommand("mode", "[ask|auto-edit|auto|yolo|plan]", "Show or set the approval mode"),
    SlashCommand("plan", "", "Show or hide the plan panel"),
    SlashCommand("undo", "", "Put files and conversation back to before the last turn"),
    SlashCommand("diff", "", "Show what this session changed in the work tree"),
    SlashCommand("compact", "", "Summarise older turns to free context"),
    SlashCommand("clear", "", "Start a new session with an empty conversation"),
    SlashCommand("cost", "", "Tokens and cost of this session"),
    SlashCommand("sessions", "", "List this workspace's sessions"),
    SlashCommand("resume", "ID", "Continue an earlier session"),
    SlashCommand("init", "", "Draft an AGENTS.md for this repository"),
    SlashCommand("exit", "", "Quit kimicode"),
)

_BY_NAME = {command.name: command for command in SLASH_COMMANDS}


def parse_slash(text: str) -> tuple[SlashCommand, str] | None:
    """(command, argument) for a prompt like "/model kimi-k2", None if it is not a slash command.

    Raises ValueError with a message for an unknown command."""
    stripped = text.strip()
    if not stripped.startswith("/") or stripped.startswith("//"):
        return None
    name, _, argument = stripped[1:].partition(" ")
    if "/" in name:  # "/etc/hosts is wrong" is a path, not a command
        return None
    command = _BY_NAME.get(name.lower())
    if command is None:
        raise ValueError(f"unknown command /{name}; /help lists them")
    return command, argument.strip()
