"""The interactive `kimicode`: a Textual app that renders the agent core's events.

No agent logic lives here: the app starts an Agent (kimicode.agent.setup), feeds it
prompts, draws the events of `Agent.run()` and answers approvals through their futures.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.app import ScreenStackError
from textual.css.query import NoMatches
from textual.worker import Worker, WorkerCancelled, WorkerFailed

from kimicode.events import (
    Approval,
    ApprovalRequested,
    CheckpointCreated,
    Compacted,
    Decision,
    ErrorEvent,
    PlanUpdated,
    ReasoningDelta,
    Retrying,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolOutput,
    TurnFinished,
    UsageUpdated,
)
from kimicode.tui.commands import SlashCommand
from kimicode.tui.history import PromptHistory
from kimicode.tui.widgets.chat import AssistantMessage, ChatLog, Notice, ThinkingBlock, UserMessage
from kimicode.tui.widgets.plan import PlanPanel
from kimicode.tui.widgets.prompt import PromptInput
from kimicode.tui.widgets.status import StatusBar
from kimicode.tui.widgets.tool_call import ToolCallRow

if TYPE_CHECKING:
    from kimicode.agent.loop import Agent
    from kimicode.config import Settings

log = logging.getLogger(__name__)

STYLES = Path(__file__).parent / "styles"
MODE_CYCLE = ("ask", "auto-edit", "auto", "yolo", "plan")
QUIT_CONFIRM_S = 2.0  # a second Ctrl+C within this many seconds quits
PLAN_PANEL_MIN_WIDTH = 100  # columns: below this the plan panel opens only on request


class KimicodeApp(App[int]):
    TITLE = "kimicode"
    CSS_PATH = [STYLES / "app.tcss", STYLES / "prompt.tcss", STYLES / "setup.tcss"]
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("ctrl+c", "interrupt_or_quit", "Interrupt / quit", priority=True, show=False),
        Binding("escape", "interrupt", "Interrupt", show=False),
        Binding("shift+tab", "cycle_mode", "Mode", priority=True, show=False),
        Binding("ctrl+t", "toggle_plan", "Plan", show=False),
        # priority: the prompt (a TextArea) would take Ctrl+D as delete-right otherwise
        Binding("ctrl+d", "quit_if_empty", "Quit", priority=True, show=False),
        # priority: the prompt would page through its own (short) text
        Binding("pageup", "scroll_chat(-1)", priority=True, show=False),
        Binding("pagedown", "scroll_chat(1)", priority=True, show=False),
    ]

    def __init__(
        self,
        workspace: Path,
        flags: dict[str, Any] | None = None,
        resume: str | None = None,
        history: PromptHistory | None = None,
    ) -> None:
        super().__init__()
        self.workspace = workspace
        self.flags = flags or {}
        self.resume_ref = resume  # "latest", a session id, or None
        self.history = history or PromptHistory()
        self.agent: Agent | None = None
        self.settings: Settings | None = None
        self.pending: list[str] = []  # prompts sent while a turn runs (or before the agent is ready)
        self.session_start: str | None = None  # first checkpoint of this session: /diff compares to it
        self._turn: Worker[None] | None = None
        self._command: Worker[None] | None = None  # a slash command that takes a while (/compact…)
        self._frozen = False
        self._mcp: Any = None  # kimicode.mcp_tools.McpHub, once connected
        self._approval: asyncio.Future[Approval] | None = None
        self._quit_armed_at = 0.0
        self._plan_opened = False

    # -- layout -----------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield ChatLog(id="chat")
            yield PlanPanel(id="plan")
        yield PromptInput(self.history, self.workspace, id="prompt")
        yield StatusBar(id="status")

    @property
    def chat(self) -> ChatLog:
        return self.query_one(ChatLog)

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def prompt_input(self) -> PromptInput:
        return self.query_one(PromptInput)

    def on_mount(self) -> None:
        self.query_one(PlanPanel).display = False
        self.status.set(mode=self.flags.get("approval_mode") or "ask")
        self.prompt_input.focus()
        self.call_after_refresh(self.connect)  # the first frame goes out before any heavy import
        # A closed terminal (SIGHUP) or a kill (SIGTERM) quits like Ctrl+C twice: shell commands
        # run in their own sessions, so only the app can stop them.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, lambda: self.call_later(self.action_quit))

    async def on_unmount(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        await self.close_agent()  # also when the app ends some other way than action_quit
        if self._mcp is not None:
            await self._mcp.close()

    # -- connecting ---------------------------------------------------------------

    @work(group="connect")
    async def connect(self) -> None:
        """Load settings and start the agent off the UI thread, after the first paint; offer
        the setup screen when no API key is configured."""
        from kimicode.agent.session import SessionError
        from kimicode.config import ConfigError, MissingCredentials

        try:
            settings = await asyncio.to_thread(self._load_settings)
        except MissingCredentials as missing:
            settings = await self._first_run(str(missing))
            if settings is None:
                return
        except (ConfigError, SessionError, OSError) as exc:
            self.show_error(f"cannot start: {exc}")
            return
        await self.start_agent(settings, self.resume_ref)

    def _load_settings(self) -> Settings:
        from kimicode.config import load_settings, resolve_endpoint

        settings = load_settings(self.workspace, self.flags)
        resolve_endpoint(settings)  # raises MissingCredentials before anything starts
        return settings

    async def _first_run(self, reason: str) -> Settings | None:
        from kimicode.config import ConfigError
        from kimicode.tui.screens.setup import SetupScreen

        result = await self.push_screen_wait(SetupScreen(reason, current_provider=self.flags.get("provider")))
        if result is None:
            self.exit(2, return_code=2, message="kimicode: no model configured; run kimicode again to set one up, "
                                 "or set MOONSHOT_API_KEY (see README)")
            return None
        try:
            return await asyncio.to_thread(self._load_settings)
        except ConfigError as exc:
            self.show_error(f"the saved settings do not work: {exc}")
            return None

    async def start_agent(self, settings: Settings, resume: str | None) -> bool:
        """Replace the current agent (if any) by a new one, continuing session `resume`."""
        from kimicode.agent.session import SessionError, find_session, list_sessions
        from kimicode.agent.setup import create_agent
        from kimicode.config import ConfigError

        def build() -> Agent:
            state = None
            if resume == "latest":
                found = list_sessions(self.workspace)
                state = found[0] if found else None
            elif resume:
                state = find_session(resume)
            return create_agent(settings, self.workspace, default_mode="ask", resume=state,
                                extra_tools=self._mcp.tools if self._mcp else ())

        if self._mcp is None:  # MCP servers start once and serve every session of the app
            from kimicode.mcp_tools import McpHub

            self._mcp = await McpHub.start(settings.mcp_servers, cwd=self.workspace)
            for problem in self._mcp.errors:
                self.show_notice(problem, "warning")
        try:
            agent = await asyncio.to_thread(build)
        except (ConfigError, SessionError, OSError) as exc:
            self.show_error(f"cannot start: {exc}")
            return False
        await self.close_agent()  # only now: a failed /resume keeps the current session
        if mode := self.flags.get("approval_mode"):  # chosen with Shift+Tab or /mode: kept
            agent.policy.mode = mode
        self.agent, self.settings, self.session_start = agent, settings, None
        if settings.theme in self.available_themes:
            self.theme = settings.theme
        else:
            known = ", ".join(sorted(self.available_themes))
            self.show_notice(f"unknown theme {settings.theme!r} in the config; choose one of: {known}", "warning")
        info = agent.backend.info
        self.status.set(model=info.name, provider=settings.provider, mode=agent.policy.mode,
                        usage=self._usage_of(agent))
        if resume:
            self.replay(agent.messages)
        if not self._frozen:
            # Everything loaded so far lives as long as the app: keep it out of the collector's
            # full passes, which otherwise stall a streaming answer for 100+ ms at a time. Once
            # only: agents replaced later by /clear or /resume must stay collectable.
            gc.freeze()
            self._frozen = True
        self.refresh_git()
        if self.pending:
            self.run_next()
        return True

    async def close_agent(self) -> None:
        agent, self.agent = self.agent, None
        if agent is None:
            return
        if agent.busy:
            agent.cancel()
            if self._turn is not None:
                with contextlib.suppress(WorkerCancelled, WorkerFailed):  # Textual may cancel it first
                    await self._turn.wait()
        if agent.session:
            agent.session.close()
        await agent.backend.aclose()

    # -- prompts and turns --------------------------------------------------------

    @on(PromptInput.Submitted)
    async def on_prompt(self, message: PromptInput.Submitted) -> None:
        from kimicode.tui.commands import parse_slash

        text = message.text
        try:
            slash = parse_slash(text)
        except ValueError as exc:
            self.show_notice(str(exc), "warning")
            return
        if slash is not None:
            command = slash[0]
            if self.command_running and command.name != "exit":
                self.show_notice(f"/{command.name}: another command is still running (Esc cancels it)", "warning")
                return
            self._command = self.run_command(*slash)
            return
        queued = self.busy or self.agent is None
        self.chat.mount(UserMessage(text, queued=queued))
        self.pending.append(text)
        if not queued:
            self.run_next()

    @property
    def turn_running(self) -> bool:
        return self._turn is not None and self._turn.is_running

    @property
    def command_running(self) -> bool:
        return self._command is not None and self._command.is_running

    @property
    def busy(self) -> bool:
        return self.turn_running or self.command_running

    @work(group="command")
    async def run_command(self, command: SlashCommand, argument: str) -> None:
        """A slash command, in a worker: keys (Esc to cancel it) keep working meanwhile."""
        from kimicode.tui.slash import run_command

        try:
            await run_command(self, command, argument)
        except Exception as exc:  # a command must never take the app down
            log.exception("/%s failed", command.name)
            self.show_error(f"/{command.name} failed: {type(exc).__name__}: {exc}")

    def run_next(self) -> None:
        if self.pending and self.agent is not None and not self.turn_running:
            self.submit(self.pending.pop(0))

    def submit(self, prompt: str) -> None:
        """Run one agent turn for `prompt` (already shown in the chat)."""
        for queued in self.chat.query(".queued"):
            queued.remove_class("queued")
            break
        self._turn = self.run_turn(prompt)

    @work(group="turn")
    async def run_turn(self, prompt: str) -> None:
        from kimicode.agent.mentions import expand_mentions

        agent = self.agent
        assert agent is not None
        self.status.set(busy=True)
        view = TurnView(self)
        try:
            request = await asyncio.to_thread(expand_mentions, prompt, agent.ctx.workspace)
            async for event in agent.run(request):
                await view.render(event)
        finally:
            with contextlib.suppress(NoMatches, ScreenStackError):  # the app may be closing: widgets gone
                await view.close()
                self.status.set(busy=False)
                self.refresh_git()
                self.prompt_input.refresh_files()  # the turn may have added or removed files
                self.call_later(self.run_next)

    def ask_approval(self, request: ApprovalRequested, row: ToolCallRow | None) -> None:
        from kimicode.tui.preview import call_preview
        from kimicode.tui.screens.approval import ApprovalScreen

        preview, lexer = call_preview(request.tool, row.arguments if row else {})
        self._approval = request.reply

        def answered(approval: Approval | None) -> None:
            self._approval = None
            if not request.reply.done():
                request.reply.set_result(approval or Approval(Decision.DENY))
            if row is not None:
                row.approved()

        self.push_screen(ApprovalScreen(request, preview, lexer, type_ahead=self.prompt_input.insert), answered)

    # -- rendering helpers ------------------------------------------------------------

    def show_notice(self, message: str, level: str = "info") -> Notice:
        notice = Notice(message, level)
        self.chat.mount(notice)
        return notice

    def show_error(self, message: str) -> None:
        self.show_notice(message, "error")

    def replay(self, messages: list[dict[str, Any]]) -> None:
        """Draw a resumed or rewound conversation (no streaming, tool calls folded)."""
        from kimicode.tui.replay import history_widgets

        self.chat.remove_children()
        self.chat.mount_all(history_widgets(messages))
        self.chat.scroll_end(animate=False)

    @work(group="git", exclusive=True, thread=True)
    def refresh_git(self) -> None:
        from kimicode.tui.git_status import git_state

        branch, dirty = git_state(self.workspace)
        self.call_from_thread(self.status.set, branch=branch, dirty=dirty)

    @staticmethod
    def _usage_of(agent: Agent) -> UsageUpdated | None:
        if not agent.usage.prompt_tokens:
            return None
        usage = agent.usage
        return UsageUpdated(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, agent.cost_usd,
                            agent.meter.tokens(agent.messages), agent.backend.info.context_window)

    # -- keys -----------------------------------------------------------------

    def on_key(self, event: events.Key) -> None:
        """Typing while a tool row has focus goes to the prompt, so the keyboard never gets lost."""
        prompt = self.prompt_input
        if event.is_printable and event.character and self.screen is self.screen_stack[0] and not prompt.has_focus:
            prompt.focus()
            prompt.insert(event.character)
            event.stop()

    def action_interrupt(self) -> None:
        if not self.prompt_input.has_focus:
            self.prompt_input.focus()
        if self.command_running and self._command is not None:
            self._command.cancel()
            self.show_notice("command cancelled", "warning")
        if self.agent is None:  # still connecting: what was sent meanwhile is dropped
            self._drop_pending()
        if self.agent is not None and self.agent.busy:
            self.deny_open_approval()
            self.agent.cancel()
            self._drop_pending()

    def _drop_pending(self) -> None:
        self.pending.clear()
        for queued in self.chat.query(".queued"):
            queued.remove()

    def _leave_setup(self) -> bool:
        """Quit keys on the first-run screen cancel it (the app then says how else to configure)."""
        from kimicode.tui.screens.setup import SetupScreen

        if isinstance(self.screen, SetupScreen):
            self.screen.action_cancel()
            return True
        return False

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Modes belong to the main screen; on the setup screen Shift+Tab moves focus back.
        if action == "cycle_mode":
            return self.screen is self.screen_stack[0]
        return True

    async def action_interrupt_or_quit(self) -> None:
        if self._leave_setup():
            return
        if self.command_running or (self.agent is not None and self.agent.busy):
            self.action_interrupt()
            self.show_notice("interrupted — press Ctrl+C again to quit", "warning")
            self._quit_armed_at = time.monotonic()
            return
        if time.monotonic() - self._quit_armed_at < QUIT_CONFIRM_S:
            await self.action_quit()
            return
        if self.prompt_input.text:
            self.prompt_input.clear()
            return
        self._quit_armed_at = time.monotonic()
        self.notify("Press Ctrl+C again to quit", timeout=QUIT_CONFIRM_S)

    async def action_quit_if_empty(self) -> None:
        if self._leave_setup():
            return
        prompt = self.prompt_input
        if not prompt.text:
            await self.action_quit()
        elif prompt.has_focus:
            prompt.action_delete_right()

    async def action_quit(self) -> None:
        """Stop the turn (its shell commands die with it), close the session, then leave."""
        if self._leave_setup():
            return
        self.deny_open_approval()
        if self._command is not None and self._command.is_running:
            self._command.cancel()
        await self.close_agent()
        self.exit(0)

    def action_focus_next(self) -> None:
        """Tab walks from the prompt back through the conversation's foldable rows, newest first."""
        from textual.widgets._collapsible import CollapsibleTitle

        rows = list(self.chat.query(CollapsibleTitle))
        focused = self.focused
        if focused is self.prompt_input and rows:
            rows[-1].focus()
        elif focused in rows:
            index = rows.index(focused)
            (rows[index - 1] if index > 0 else self.prompt_input).focus()
        else:
            super().action_focus_next()

    def action_cycle_mode(self) -> None:
        current = self.agent.policy.mode if self.agent else self.status.info.mode
        self.set_mode(MODE_CYCLE[(MODE_CYCLE.index(current) + 1) % len(MODE_CYCLE)]
                      if current in MODE_CYCLE else MODE_CYCLE[0])

    def set_mode(self, mode: str) -> None:
        from kimicode.approval import MODES

        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if self.agent is not None:
            self.agent.policy.mode = mode  # type: ignore[assignment]
        self.flags["approval_mode"] = mode  # a /clear or /resume keeps it
        self.status.set(mode=mode)

    def action_toggle_plan(self) -> None:
        panel = self.query_one(PlanPanel)
        panel.display = not panel.display

    def action_scroll_chat(self, direction: int) -> None:
        if direction < 0:
            self.chat.scroll_page_up()
        else:
            self.chat.scroll_page_down()

    def deny_open_approval(self) -> None:
        """Answer an open approval modal with a denial (a turn that ends or is interrupted)."""
        if self._approval is not None and isinstance(self.screen, _approval_screen_type()):
            self.screen.dismiss(Approval(Decision.DENY))

    def show_plan(self, event: PlanUpdated) -> None:
        panel = self.query_one(PlanPanel)
        panel.show(event.items)
        if not self._plan_opened and self.size.width >= PLAN_PANEL_MIN_WIDTH:
            panel.display = True  # opened once by itself; after that the user decides
        self._plan_opened = True


class TurnView:
    """Draws the events of one turn into the chat."""

    def __init__(self, app: KimicodeApp) -> None:
        self.app = app
        self.answer: AssistantMessage | None = None
        self.thinking: ThinkingBlock | None = None
        self.rows: dict[str, ToolCallRow] = {}

    async def render(self, event: Any) -> None:
        app, chat = self.app, self.app.chat
        match event:
            case ReasoningDelta(text=text):
                if self.thinking is None:
                    await self._end_answer()
                    self.thinking = ThinkingBlock()
                    await chat.mount(self.thinking)
                self.thinking.add(text)
            case TextDelta(text=text):
                self._end_thinking()
                if self.answer is None:
                    self.answer = AssistantMessage()
                    await chat.mount(self.answer)
                self.answer.add(text)
            case ToolCallStarted(call_id=call_id, tool=tool, arguments=arguments, title=title, kind=kind):
                self._end_thinking()
                await self._end_answer()
                row = ToolCallRow(call_id, tool, title, kind, arguments)
                self.rows[call_id] = row
                await chat.mount(row)
            case ToolOutput(call_id=call_id, text=text):
                if row := self.rows.get(call_id):
                    row.output(text)
            case ApprovalRequested():
                if row := self.rows.get(event.call_id):
                    row.waiting_for_approval()
                app.ask_approval(event, row)
            case ToolCallFinished(call_id=call_id, output=output, is_error=is_error, display=display,
                                  duration_s=duration):
                row = self.rows.pop(call_id, None)
                if row is None:  # e.g. the test run the loop starts itself
                    row = ToolCallRow(call_id, event.tool, _finished_title(event), "execute", {})
                    await chat.mount(row)
                row.finish(output, is_error, display, duration)
            case PlanUpdated():
                app.show_plan(event)
            case UsageUpdated():
                app.status.set(usage=event)
            case CheckpointCreated(id=checkpoint_id):
                if app.session_start is None:
                    app.session_start = checkpoint_id
            case Compacted(tokens_before=before, tokens_after=after, messages_summarized=count):
                app.show_notice(f"context compacted: {before:,} → {after:,} tokens ({count} messages summarised)")
            case Retrying(attempt=attempt, delay=delay, reason=reason):
                app.show_notice(f"model call failed ({reason}); retry {attempt} in {delay:.1f} s", "warning")
            case ErrorEvent(message=message):
                app.show_error(message)
            case TurnFinished(stop_reason=reason, result=result):
                await self.close()
                if reason == "cancelled":
                    app.show_notice("interrupted", "warning")
                elif reason not in ("end_turn", "error"):
                    app.show_notice(result, "warning")

    def _end_thinking(self) -> None:
        if self.thinking is not None:
            self.thinking.finish()
            self.thinking = None

    async def _end_answer(self) -> None:
        if self.answer is not None:
            self.answer.finish()
            self.answer = None

    async def close(self) -> None:
        self._end_thinking()
        await self._end_answer()
        for row in self.rows.values():  # calls a cancel cut off
            row.finish("interrupted", True, {}, 0.0)
        self.rows.clear()
        self.app.deny_open_approval()


def _finished_title(event: ToolCallFinished) -> str:
    return "Run the tests" if event.tool == "run_tests" else event.tool


def _approval_screen_type() -> type:
    from kimicode.tui.screens.approval import ApprovalScreen

    return ApprovalScreen
