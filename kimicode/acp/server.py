"""The ACP agent: editors drive kimicode sessions over JSON-RPC on stdio.

Each ACP session is one kimicode Agent (the same core as the TUI and headless mode) and
one kimicode session transcript, so `kimicode -c` in a terminal continues an editor's
session and `session/load` replays one from the terminal. Approvals go to the editor
through `session/request_permission` and fail closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import acp
from acp import RequestError
from acp.schema import (
    AuthenticateResponse,
    ClientCapabilities,
    CurrentModeUpdate,
    EmbeddedResourceContentBlock,
    Implementation,
    InitializeResponse,
    ListSessionsResponse,
    LoadSessionResponse,
    NewSessionResponse,
    PermissionOption,
    PromptResponse,
    ResourceContentBlock,
    SessionInfo,
    SessionMode,
    SessionModeState,
    SetSessionModeResponse,
    TextContentBlock,
    TextResourceContents,
    ToolCallUpdate,
)

from kimicode.acp import updates
from kimicode.acp.files import EditorFiles
from kimicode.acp.terminal import EditorTerminal
from kimicode.acp.handshake import initialize_result
from kimicode.backends.repair import arguments_object
from kimicode.acp.mcp import client_servers
from kimicode.events import (
    Approval,
    ApprovalRequested,
    Decision,
    ErrorEvent,
    PlanUpdated,
    ReasoningDelta,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolOutput,
    TurnFinished,
)

log = logging.getLogger(__name__)

MODES = {
    "ask": "Ask before edits and commands",
    "auto-edit": "Edit files freely; ask before commands",
    "auto": "Run edits and ordinary commands; ask before destructive ones",
    "yolo": "Run everything except the hard deny-list",
    "plan": "Read and investigate only; answer with a plan",
}
_STOP_REASONS = {"end_turn": "end_turn", "cancelled": "cancelled", "max_steps": "max_turn_requests",
                 "max_tokens": "max_tokens", "length": "max_tokens", "refusal": "refusal"}
_DECISIONS = {"allow_once": Decision.ALLOW_ONCE, "allow_always": Decision.ALLOW_ALWAYS, "reject": Decision.DENY}


@dataclass
class AcpSession:
    id: str
    agent: Any  # kimicode.agent.loop.Agent
    cwd: Path
    turn: asyncio.Task[Any] | None = None
    asking: set[asyncio.Task[None]] = field(default_factory=set)  # open permission requests
    before_edit: dict[str, tuple[Path, str | None]] = field(default_factory=dict)  # call id -> file then
    live_output: dict[str, str] = field(default_factory=dict)
    mcp: Any = None  # kimicode.mcp_tools.McpHub of this session


class KimicodeAcpAgent:
    def __init__(self, flags: dict[str, Any] | None = None, handshake: dict[str, Any] | None = None) -> None:
        self.flags = flags or {}
        self.sessions: dict[str, AcpSession] = {}
        # The `initialize` params when the stdio front door answered it (see stdio.py).
        self._handshake = handshake if handshake is not None else {}
        self._capabilities: ClientCapabilities | None = None
        self._conn: Any = None

    @property
    def client_capabilities(self) -> ClientCapabilities:
        if self._capabilities is None:
            try:
                self._capabilities = ClientCapabilities.model_validate(self._handshake.get("clientCapabilities") or {})
            except ValueError:  # odd capabilities: use none of them rather than fail every session
                log.warning("ignoring client capabilities the ACP schema rejects")
                self._capabilities = ClientCapabilities()
        return self._capabilities

    def on_connect(self, conn: Any) -> None:
        self._conn = conn

    # -- setup ------------------------------------------------------------------

    async def initialize(self, protocol_version: int, client_capabilities: ClientCapabilities | None = None,
                         client_info: Implementation | None = None, **kwargs: Any) -> InitializeResponse:
        self._capabilities = client_capabilities or ClientCapabilities()
        return InitializeResponse.model_validate(initialize_result())

    async def authenticate(self, method_id: str, **kwargs: Any) -> AuthenticateResponse:
        return AuthenticateResponse()

    async def new_session(self, cwd: str, mcp_servers: list[Any] | None = None, **kwargs: Any) -> NewSessionResponse:
        session = await self._start(cwd, None, mcp_servers)
        return NewSessionResponse(session_id=session.id, modes=self._modes(session))

    async def load_session(self, cwd: str, session_id: str, mcp_servers: list[Any] | None = None,
                           **kwargs: Any) -> LoadSessionResponse:
        from kimicode.agent.session import SessionError, find_session

        if (open_session := self.sessions.get(session_id)) is not None:  # reopened in the editor
            if open_session.turn is not None and not open_session.turn.done():
                raise RequestError.invalid_request({"message": f"session {session_id} is running a prompt"})
            await self._replay(open_session)
            return LoadSessionResponse(modes=self._modes(open_session))
        try:
            state = await asyncio.to_thread(find_session, session_id)
        except SessionError as exc:
            raise RequestError.resource_not_found(session_id) from exc
        if state.id != session_id:  # a prefix: the editor must address the session by its id
            raise RequestError.resource_not_found(session_id)
        session = await self._start(cwd, state, mcp_servers)
        await self._replay(session)
        return LoadSessionResponse(modes=self._modes(session))

    async def list_sessions(self, cwd: str | None = None, cursor: str | None = None, **kwargs: Any) -> ListSessionsResponse:
        from kimicode.agent.session import list_sessions

        found = await asyncio.to_thread(list_sessions, Path(cwd).resolve() if cwd else None)
        return ListSessionsResponse(sessions=[
            SessionInfo(
                session_id=state.id,
                cwd=str(state.meta.get("cwd", "")),
                title=" ".join(state.first_prompt.split())[:80] or None,
                updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.updated)),
            )
            for state in found[:200]
        ])

    async def set_session_mode(self, session_id: str, mode_id: str, **kwargs: Any) -> SetSessionModeResponse:
        session = self._session(session_id)
        if mode_id not in MODES:
            raise RequestError.invalid_params({"message": f"unknown mode {mode_id!r}; one of {', '.join(MODES)}"})
        session.agent.policy.mode = mode_id
        await self._update(session, CurrentModeUpdate(session_update="current_mode_update", current_mode_id=mode_id))
        return SetSessionModeResponse()

    async def _start(self, cwd: str, state: Any, mcp_servers: list[Any] | None) -> AcpSession:
        from kimicode.agent.session import SessionError
        from kimicode.agent.setup import create_agent
        from kimicode.config import ConfigError, load_settings
        from kimicode.mcp_tools import McpHub

        root = Path(cwd)
        if not root.is_absolute() or not root.is_dir():
            raise RequestError.invalid_params({"message": f"cwd must be an absolute path to a folder, not {cwd!r}"})
        root = root.resolve()

        try:
            settings = await asyncio.to_thread(load_settings, root, self.flags)
        except (ConfigError, OSError) as exc:
            raise RequestError.internal_error({"message": str(exc)}) from exc
        offered, problems = client_servers(mcp_servers)
        hub = await McpHub.start({**settings.mcp_servers, **offered}, cwd=root)  # the editor's win on a name clash
        try:
            agent = await asyncio.to_thread(create_agent, settings, root, default_mode="ask", resume=state,
                                            extra_tools=hub.tools)
        except (ConfigError, SessionError, OSError) as exc:
            await hub.close()
            raise RequestError.internal_error({"message": str(exc)}) from exc
        except BaseException:
            await hub.close()
            raise
        session = AcpSession(agent.session.id, agent, root, mcp=hub)
        if problems or hub.errors:  # said after the response, as text in the session: it goes on
            note = "\n".join(f"[{problem}]" for problem in [*problems, *hub.errors])
            asyncio.get_running_loop().call_soon(
                lambda: asyncio.ensure_future(self._update(session, acp.update_agent_message_text(note + "\n"))))
        fs = self.client_capabilities.fs
        if fs is not None and (fs.read_text_file or fs.write_text_file):
            agent.ctx.files = EditorFiles(self._conn, session.id, read=bool(fs.read_text_file),
                                          write=bool(fs.write_text_file))
        if self.client_capabilities.terminal:
            agent.ctx.terminal = EditorTerminal(self._conn, session.id)
        self.sessions[session.id] = session
        return session

    def _modes(self, session: AcpSession) -> SessionModeState:
        return SessionModeState(
            current_mode_id=session.agent.policy.mode,
            available_modes=[SessionMode(id=mode, name=mode, description=text) for mode, text in MODES.items()],
        )

    def _session(self, session_id: str) -> AcpSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise RequestError.invalid_params({"message": f"unknown session {session_id!r}"})
        return session

    # -- a turn -----------------------------------------------------------------

    async def prompt(self, session_id: str, prompt: list[Any], **kwargs: Any) -> PromptResponse:
        from kimicode.agent.mentions import expand_mentions

        session = self._session(session_id)
        if session.turn is not None and not session.turn.done():
            raise RequestError.invalid_request({"message": "a prompt is already running in this session"})
        session.turn = asyncio.current_task()
        text = prompt_text(prompt, session.cwd)
        if not text.strip():
            raise RequestError.invalid_params({"message": "the prompt has no text"})
        request = await asyncio.to_thread(expand_mentions, text, session.agent.ctx.workspace)
        finished = TurnFinished("cancelled", "cancelled")
        error: ErrorEvent | None = None
        open_calls: set[str] = set()
        try:
            async for event in session.agent.run(request):
                if isinstance(event, ErrorEvent):
                    error = event
                elif isinstance(event, TurnFinished):
                    finished = event
                else:
                    if isinstance(event, ToolCallStarted):
                        open_calls.add(event.call_id)
                    elif isinstance(event, ToolCallFinished):
                        open_calls.discard(event.call_id)
                    await self._render(session, event)
            for call_id in open_calls:  # cut off by a cancel or an error: not left "in progress"
                await self._update(session, acp.update_tool_call(call_id, status="failed"))
        finally:
            for task in session.asking:
                task.cancel()
            session.turn = None
        if finished.stop_reason == "error":
            raise RequestError.internal_error({"message": error.message if error else finished.result})
        if finished.stop_reason not in _STOP_REASONS:  # a budget, the loop guard, failing tests: say why
            await self._update(session, acp.update_agent_message_text(f"\n\n[{finished.result}]"))
        return PromptResponse(stop_reason=_STOP_REASONS.get(finished.stop_reason, "end_turn"))  # type: ignore[arg-type]

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        session = self.sessions.get(session_id)
        if session is None:
            return  # a notification: nothing to answer
        for task in session.asking:
            task.cancel()
        session.agent.cancel()

    async def _render(self, session: AcpSession, event: Any) -> None:
        match event:
            case TextDelta(text=text):
                await self._update(session, acp.update_agent_message_text(text))
            case ReasoningDelta(text=text):
                await self._update(session, acp.update_agent_thought_text(text))
            case ToolCallStarted():
                if event.kind in ("edit", "delete", "move") and (path := updates.edited_path(event.arguments, session.cwd)):
                    session.before_edit[event.call_id] = (path, await _contents(session, path))
                await self._update(session, updates.tool_call_started(event, session.cwd))
            case ToolOutput(call_id=call_id, text=text):
                session.live_output[call_id] = session.live_output.get(call_id, "") + text
                await self._update(session, updates.tool_output(call_id, session.live_output[call_id]))
            case ApprovalRequested():
                task = asyncio.create_task(self._ask(session, event))
                session.asking.add(task)
                task.add_done_callback(session.asking.discard)
            case ToolCallFinished():
                session.live_output.pop(event.call_id, None)
                terminal = session.agent.ctx.terminal
                terminal_id = terminal.terminal_of.pop(event.call_id, None) if terminal else None
                edit = None
                if (before := session.before_edit.pop(event.call_id, None)) is not None:
                    path, old = before
                    new = await _contents(session, path)
                    edit = (str(path), old, new or "") if new is not None or old is not None else None
                await self._update(session, updates.tool_call_finished(event, edit, terminal_id))
            case PlanUpdated():
                await self._update(session, updates.plan(event))

    async def _ask(self, session: AcpSession, request: ApprovalRequested) -> None:
        """Ask the editor; anything but an explicit allow (an error, a cancel, a closed
        client) denies."""
        decision = Decision.DENY
        always = ", ".join(request.rules) if request.rules else request.tool
        try:
            response = await self._conn.request_permission(
                session_id=session.id,
                tool_call=ToolCallUpdate(tool_call_id=request.call_id, title=request.title, kind=request.kind,
                                         status="pending"),
                options=[
                    PermissionOption(option_id="allow_once", name="Allow once", kind="allow_once"),
                    PermissionOption(option_id="allow_always", name=f"Always allow {always}", kind="allow_always"),
                    PermissionOption(option_id="reject", name="Reject", kind="reject_once"),
                ],
            )
            outcome = response.outcome
            if getattr(outcome, "outcome", None) == "selected":
                decision = _DECISIONS.get(outcome.option_id, Decision.DENY)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("permission request failed; denying")
        finally:
            if not request.reply.done():
                request.reply.set_result(Approval(decision))

    async def _update(self, session: AcpSession, update: Any) -> None:
        await self._conn.session_update(session_id=session.id, update=update)

    async def _replay(self, session: AcpSession) -> None:
        """A loaded session's conversation as updates, so the editor shows it."""
        results = {m.get("tool_call_id"): m for m in session.agent.messages if m.get("role") == "tool"}
        for message in session.agent.messages[1:]:
            role, content = message.get("role"), message.get("content")
            text = content if isinstance(content, str) else ""
            if role == "user" and text:
                await self._update(session, acp.update_user_message_text(text))
            elif role == "assistant":
                if text:
                    await self._update(session, acp.update_agent_message_text(text))
                for call in message.get("tool_calls") or []:
                    function = call.get("function") or {}
                    arguments = arguments_object(function.get("arguments"))
                    result = results.get(call.get("id"))
                    await self._update(session, acp.start_tool_call(
                        call.get("id", ""), str(function.get("name", "tool")), kind="other",
                        status="completed" if result else "failed",
                        raw_input=arguments,
                        content=[acp.tool_content(acp.text_block(str(result.get("content", "")) if result else "no result"))],
                    ))

    # -- lifecycle ----------------------------------------------------------------

    async def ext_method(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise RequestError.method_not_found(method)

    async def ext_notification(self, method: str, params: dict[str, Any]) -> None:
        return None

    async def close(self) -> None:
        """End every session: stop turns (their commands die), close transcripts and clients."""
        for session in list(self.sessions.values()):
            session.agent.cancel()
            if session.turn is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(session.turn), 5)
            if session.agent.session:
                session.agent.session.close()
            with contextlib.suppress(Exception):
                await session.agent.backend.aclose()
            if session.mcp is not None:
                await session.mcp.close()
        self.sessions.clear()


def prompt_text(blocks: list[Any], cwd: Path) -> str:
    """The user's words, with embedded files attached and linked files mentioned (`@path`)."""
    from kimicode.agent.mentions import HEADER

    words: list[str] = []
    attached: list[str] = []
    for block in blocks:
        if isinstance(block, TextContentBlock):
            words.append(block.text)
        elif isinstance(block, EmbeddedResourceContentBlock) and isinstance(block.resource, TextResourceContents):
            attached.append(f'<file path="{_display_path(block.resource.uri, cwd)}">\n{block.resource.text}\n</file>')
        elif isinstance(block, ResourceContentBlock):
            words.append(f"@{_display_path(block.uri, cwd)}")
    text = " ".join(word for word in words if word)
    return text + (HEADER + "\n".join(attached) if attached else "")


def _display_path(uri: str, cwd: Path) -> str:
    path = uri.removeprefix("file://")
    with contextlib.suppress(ValueError):
        return Path(path).relative_to(cwd).as_posix()
    return path


async def _contents(session: AcpSession, path: Path) -> str | None:
    """The file as the tools see it (the editor's buffer when it serves fs/*), None if absent."""
    if not path.is_file() and not isinstance(session.agent.ctx.files, EditorFiles):
        return None
    try:
        return (await session.agent.ctx.files.read_bytes(path)).decode("utf-8", errors="replace")
    except OSError:
        return None
