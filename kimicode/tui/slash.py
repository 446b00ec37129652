"""What each slash command does; the app calls `run_command` for a parsed `/name argument`."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from rich.syntax import Syntax
from rich.text import Text
from textual.widgets import Static

from kimicode.approval import MODES
from kimicode.tui.commands import SLASH_COMMANDS, SlashCommand
from kimicode.tui.widgets.chat import UserMessage
from kimicode.tui.widgets.status import tokens

if TYPE_CHECKING:
    from kimicode.tui.app import KimicodeApp

KEYS = (
    ("Enter", "send"),
    ("Ctrl+J, Alt+Enter, \\ Enter", "new line"),
    ("↑ / ↓", "prompt history"),
    ("@", "mention a file (Tab completes)"),
    ("Esc, Ctrl+C", "interrupt the running turn"),
    ("Ctrl+C twice, Ctrl+D", "quit"),
    ("Shift+Tab", "next approval mode"),
    ("Ctrl+T", "show or hide the plan"),
    ("PgUp / PgDn", "scroll the conversation"),
)
MAX_DIFF_LINES = 2_000

# Commands that need the agent idle: they change its history, backend or session.
_NEEDS_IDLE = {"model", "undo", "compact", "clear", "resume", "init"}


async def run_command(app: KimicodeApp, command: SlashCommand, argument: str) -> None:
    if command.name in _NEEDS_IDLE:
        if app.agent is None:
            app.show_notice(f"/{command.name}: not connected to a model yet", "warning")
            return
        if app.turn_running:
            app.show_notice(f"/{command.name}: wait for the turn to finish or interrupt it (Esc)", "warning")
            return
    handler = globals()[f"_{command.name}"]
    await handler(app, argument)


async def _help(app: KimicodeApp, argument: str) -> None:
    text = Text("Commands\n", style="bold")
    for command in SLASH_COMMANDS:
        text.append(f"  /{command.name} {command.usage}".ljust(44), style="bold")
        text.append(command.help + "\n")
    text.append("Keys\n", style="bold")
    for keys, what in KEYS:
        text.append(f"  {keys}".ljust(44), style="bold")
        text.append(what + "\n")
    text.rstrip()
    app.chat.mount(Static(text, classes="help"))


async def _model(app: KimicodeApp, argument: str) -> None:
    from kimicode.agent.setup import create_backend
    from kimicode.config import ConfigError, is_local, load_settings

    assert app.agent is not None and app.settings is not None
    if not argument:
        current = app.agent.backend.info.name
        known = ", ".join(name for name in app.settings.models if name != current)
        app.show_notice(f"model: {current} ({app.settings.provider}); others: {known or 'none configured'}")
        return
    if is_local(app.settings):
        # The engine serves the one checkpoint it loaded; a second load would double the memory.
        app.show_error("/model: the local engine serves the checkpoint it loaded; restart with another --model-path")
        return
    flags = {**app.flags, "model": argument}
    try:
        settings = await asyncio.to_thread(load_settings, app.workspace, flags)
        backend = create_backend(settings)
    except ConfigError as exc:
        app.show_error(f"/model: {exc}")
        return
    old, app.agent.backend = app.agent.backend, backend
    await old.aclose()
    app.flags, app.settings = flags, settings
    app.status.set(model=backend.info.name)
    app.show_notice(f"model: {backend.info.name} (context {tokens(backend.info.context_window)})")
    if argument not in settings.models:
        app.show_notice(f"{argument} is not in the models table: assuming a {tokens(backend.info.context_window)} "
                        f'context and no prices; add [models."{argument}"] to the config if that is wrong',
                        "warning")


async def _mode(app: KimicodeApp, argument: str) -> None:
    if not argument:
        current = app.agent.policy.mode if app.agent else app.status.info.mode
        app.show_notice(f"mode: {current}; choose one of {', '.join(MODES)} (Shift+Tab cycles)")
        return
    try:
        app.set_mode(argument.lower())
    except ValueError as exc:
        app.show_notice(str(exc), "warning")
        return
    app.show_notice(f"mode: {argument.lower()}")


async def _plan(app: KimicodeApp, argument: str) -> None:
    app.action_toggle_plan()


async def _undo(app: KimicodeApp, argument: str) -> None:
    from kimicode.agent.checkpoints import CheckpointError
    from kimicode.agent.undo import undo_last_turn

    assert app.agent is not None
    try:
        result = await asyncio.to_thread(undo_last_turn, app.agent)
    except (CheckpointError, OSError) as exc:
        app.show_notice(f"/undo: {exc}", "warning")
        return
    app.replay(app.agent.messages)
    label = result.restored.label.removeprefix("before: ")
    app.show_notice(f"undone: “{label}” — files and conversation are back to before it")
    app.refresh_git()


async def _diff(app: KimicodeApp, argument: str) -> None:
    agent = app.agent
    if agent is None or agent.checkpoints is None or app.session_start is None:
        app.show_notice("no changes in this session yet" if agent and agent.checkpoints else
                        "/diff needs checkpoints (checkpoints = true)")
        return
    from kimicode.agent.checkpoints import CheckpointError

    store = agent.checkpoints
    try:
        diff = await asyncio.to_thread(store.diff, store.get(app.session_start))
    except (CheckpointError, OSError) as exc:
        app.show_notice(f"/diff: {exc}", "warning")
        return
    if not diff.strip():
        app.show_notice("no changes in this session")
        return
    lines = diff.splitlines()
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"… {len(lines) - MAX_DIFF_LINES} more lines"]
    app.chat.mount(Static(Syntax("\n".join(lines), "diff", theme="ansi_dark", background_color="default"),
                          classes="diff"))


async def _compact(app: KimicodeApp, argument: str) -> None:
    from kimicode.backends.base import BackendError

    agent = app.agent
    assert agent is not None
    before = agent.meter.tokens(agent.messages)
    notice = app.show_notice("compacting… (Esc cancels)")
    try:
        done = await agent.compact(keep_tokens=0)  # asked for: summarise all but the latest step
    except BackendError as exc:
        notice.update(Text(f"/compact failed: {exc}"))
        return
    except asyncio.CancelledError:
        notice.update(Text("/compact cancelled; the conversation is unchanged"))
        raise
    after = agent.meter.tokens(agent.messages)
    notice.update(f"compacted: {before:,} → {after:,} tokens" if done else "nothing to compact yet")


async def _clear(app: KimicodeApp, argument: str) -> None:
    assert app.settings is not None
    app.chat.remove_children()
    if await app.start_agent(app.settings, None):
        app.show_notice("new session")


async def _cost(app: KimicodeApp, argument: str) -> None:
    agent = app.agent
    if agent is None:
        app.show_notice("not connected yet")
        return
    usage = agent.usage
    cached = 100 * usage.cached_tokens / usage.prompt_tokens if usage.prompt_tokens else 0
    app.show_notice(
        f"this session: {usage.prompt_tokens:,} tokens in ({cached:.0f}% from cache), "
        f"{usage.completion_tokens:,} out, {agent.steps} model calls, ${agent.cost_usd:.4f}"
    )


async def _sessions(app: KimicodeApp, argument: str) -> None:
    from kimicode.agent.session import list_sessions

    found = await asyncio.to_thread(list_sessions, app.workspace)
    if not found:
        app.show_notice("no sessions in this workspace yet")
        return
    current = app.agent.session.id if app.agent and app.agent.session else None
    text = Text("Sessions (/resume ID)\n", style="bold")
    for state in found[:20]:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(state.updated))
        mark = " (this one)" if state.id == current else ""
        text.append(f"  {state.id}", style="bold")
        text.append(f"  {when}  {' '.join(state.first_prompt.split())[:50]}{mark}\n")
    text.rstrip()
    app.chat.mount(Static(text, classes="help"))


async def _resume(app: KimicodeApp, argument: str) -> None:
    if not argument:
        await _sessions(app, "")
        return
    assert app.settings is not None
    if app.agent and app.agent.session and app.agent.session.id.startswith(argument):
        app.show_notice("that is this session")
        return
    if await app.start_agent(app.settings, argument):
        app.show_notice(f"resumed session {app.agent.session.id if app.agent and app.agent.session else argument}")


async def _init(app: KimicodeApp, argument: str) -> None:
    from kimicode import prompts

    app.chat.mount(UserMessage("/init — draft AGENTS.md"))
    app.submit(prompts.render("init"))


async def _exit(app: KimicodeApp, argument: str) -> None:
    await app.action_quit()
