"""The agent loop: model ↔ tools until the model stops, as a stream of events.

`Agent.run(prompt)` is an async iterator of `kimicode.events` ending with
`TurnFinished`. Stop reasons are exceptions carrying a message; whatever stops a
turn, the history stays valid: every tool call gets a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kimicode import prompts
from kimicode.agent.checkpoints import CheckpointError, CheckpointStore
from kimicode.agent.context import COMPACT_AT, KEEP_RECENT, ContextMeter, plan_compaction, summarize
from kimicode.agent.instructions import ProjectInstructions
from kimicode.agent.session import SessionLog, SessionState
from kimicode.agent.testing import TestOutcome
from kimicode.agent.verify import TestRun, Verifier
from kimicode.approval import ApprovalPolicy
from kimicode.backends.base import (
    Backend,
    BackendError,
    ChatRequest,
    Finish,
    ReasoningDelta,
    Retrying,
    TextDelta,
    ToolCallDone,
    Usage,
)
from kimicode.events import (
    Approval,
    ApprovalRequested,
    CheckpointCreated,
    Compacted,
    Decision,
    ErrorEvent,
    Event,
    PlanItem,
    PlanUpdated,
    StopReason,
    ToolCallFinished,
    ToolCallStarted,
    TurnFinished,
    TurnStarted,
    UsageUpdated,
)
from kimicode.backends.repair import arguments_object
from kimicode.tools.base import ToolContext, ToolError, ToolRegistry, ToolResult
from kimicode.tools.shell_risk import assess

log = logging.getLogger(__name__)

LOOP_WARN_AT = 3  # identical failing calls before the model is told to change course
LOOP_STOP_AT = 5  # ... and before the turn is stopped
MAX_VERIFY_ROUNDS = 4  # failing test runs fed back per turn before the turn ends as tests_failed
TURN_LABEL = "before: "  # label prefix of the checkpoint taken at the start of each turn
RECOMPACT_GROWTH = 0.25  # of the window: how much the history must grow before compacting again


@dataclass(frozen=True, slots=True)
class Limits:
    max_steps: int = 100  # model calls per turn
    max_cost: float | None = None  # USD per turn
    max_tokens: int | None = None  # prompt + completion tokens per turn, compaction included
    timeout: float | None = None  # seconds per turn


class StopTurn(Exception):
    """Ends a turn early; `reason` becomes the TurnFinished stop reason."""

    def __init__(self, reason: StopReason, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class _Budget:
    """What one turn may still spend."""

    limits: Limits
    cost_at_start: float
    tokens_at_start: int
    steps: int = 0

    def check(self, cost_usd: float, tokens: int) -> None:
        limits = self.limits
        if self.steps >= limits.max_steps:
            raise StopTurn("max_steps", f"stopped: reached the limit of {limits.max_steps} model calls")
        spent = cost_usd - self.cost_at_start
        if limits.max_cost is not None and spent >= limits.max_cost:
            raise StopTurn("max_cost", f"stopped: spent ${spent:.4f}, the limit is ${limits.max_cost:.4f}")
        used = tokens - self.tokens_at_start
        if limits.max_tokens is not None and used >= limits.max_tokens:
            raise StopTurn("max_tokens", f"stopped: used {used} tokens, the limit is {limits.max_tokens}")


@dataclass(slots=True)
class _Reply:
    text: str
    reasoning: str
    calls: list[ToolCallDone]
    finish: str


class Agent:
    def __init__(
        self,
        backend: Backend,
        tools: ToolRegistry,
        policy: ApprovalPolicy,
        ctx: ToolContext,
        system_prompt: str | Callable[[], str],
        limits: Limits = Limits(),
        session: SessionLog | None = None,
        resumed: SessionState | None = None,
        verifier: Verifier | None = None,
        checkpoints: CheckpointStore | None = None,
    ):
        self.backend = backend
        self.tools = tools
        self.policy = policy
        self.ctx = ctx
        self.limits = limits
        self.session = session
        self.messages: list[dict[str, Any]] = []
        self.usage = Usage()
        self.cost_usd = 0.0
        self.steps = 0  # model calls, all turns
        self.verifier = verifier
        self.checkpoints = checkpoints
        self._baseline_tried = False
        self.meter = ContextMeter()
        self._compacted_to = 0  # history size right after the last compaction
        self.instructions = ProjectInstructions(ctx.workspace)
        self.plan: tuple[PlanItem, ...] = ()
        # (checkpoint id, history then) of this process's turns, oldest first: in-session undo.
        self.turn_checkpoints: list[tuple[str, list[dict[str, Any]]]] = []
        self._request: dict[str, Any] | None = None  # the user's message that started this turn
        self._turn_task: asyncio.Task[None] | None = None
        self._warned_no_usage = False
        self._last_usage: Usage | None = None
        self._failures: Counter[tuple[str, str, str, int]] = Counter()  # identical failing calls this turn
        self._edits = 0  # successful file edits so far: a retry after an edit is a new attempt
        self._emit: Callable[[Event], None] = lambda event: None
        # A callable prompt is rebuilt at each turn (the repo map may have changed).
        self._system_prompt = system_prompt
        system_prompt = system_prompt() if callable(system_prompt) else system_prompt
        if resumed is not None and resumed.messages:
            self.messages = list(resumed.messages)
            self.usage = Usage(*resumed.usage)
            self.cost_usd = resumed.cost_usd
            self._close_open_calls("kimicode stopped before this call finished")
            self._set_system_prompt(system_prompt)  # the mode or AGENTS.md may have changed
        else:
            self._append({"role": "system", "content": system_prompt})

    async def run(self, prompt: str) -> AsyncIterator[Event]:
        """Run one user turn, yielding its events; the last one is always TurnFinished."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        task = asyncio.create_task(self._turn(prompt, queue.put_nowait))
        # None follows the task's end however it ends, so this loop can never wait for ever
        # (a task cancelled before it first ran emits nothing at all).
        task.add_done_callback(lambda _: queue.put_nowait(None))
        self._turn_task = task
        try:
            while (event := await queue.get()) is not None:
                yield event
                if isinstance(event, TurnFinished):
                    return
            if task.cancelled():
                yield TurnFinished("cancelled", "cancelled by the user")
            else:
                exc = task.exception()
                yield TurnFinished("error", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._turn_task = None
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @property
    def busy(self) -> bool:
        """A turn is running."""
        return self._turn_task is not None and not self._turn_task.done()

    def cancel(self) -> None:
        """Stop the running turn; it still ends with TurnFinished("cancelled")."""
        if self._turn_task and not self._turn_task.done():
            self._turn_task.cancel()

    # -- one turn -------------------------------------------------------------

    async def _turn(self, prompt: str, emit: Callable[[Event], None]) -> None:
        self._emit = emit
        self.ctx.emit = self._emit_from_tool
        self._failures.clear()
        if self.verifier:
            self.verifier.rounds, self.verifier.told_preexisting = 0, False
        result, reason, error_kind = "", "end_turn", "internal"
        try:
            emit(TurnStarted(prompt))
            if callable(self._system_prompt):
                self._set_system_prompt(await asyncio.to_thread(self._system_prompt))
            await self._checkpoint(f"{TURN_LABEL}{' '.join(prompt.split())[:60]}")
            self._request = {"role": "user", "content": prompt}
            self._append(self._request)
            async with asyncio.timeout(self.limits.timeout):
                result = await self._loop()
        except StopTurn as stop:
            result, reason, error_kind = str(stop), stop.reason, "request"
        except TimeoutError:
            result, reason = f"stopped: the turn ran longer than {self.limits.timeout:g} s", "timeout"
        except asyncio.CancelledError:
            result, reason = "cancelled by the user", "cancelled"
        except BackendError as exc:
            result, reason, error_kind = str(exc), "error", exc.kind
        except Exception as exc:  # a bug: report it, keep the session usable
            log.exception("agent turn failed")
            result, reason = f"internal error: {type(exc).__name__}: {exc}", "error"
        if reason != "end_turn":
            self._close_open_calls(result)
            if reason == "error":
                emit(ErrorEvent(result, error_kind))
        emit(TurnFinished(reason, result))  # type: ignore[arg-type]

    def _emit_from_tool(self, event: Event) -> None:
        if isinstance(event, PlanUpdated):
            self.plan = event.items  # kept through compaction
        self._emit(event)

    async def _loop(self) -> str:
        budget = _Budget(self.limits, self.cost_usd, self._tokens_spent())
        while True:
            budget.check(self.cost_usd, self._tokens_spent())
            if self._needs_compaction():
                await self.compact()
            budget.steps += 1
            self.steps += 1
            try:
                reply = await self._call_model()
            except BackendError as exc:
                # The server's window is smaller than we thought: keep a quarter of what we had.
                if exc.kind != "context" or not await self.compact(self.meter.tokens(self.messages) // 4):
                    raise
                reply = await self._call_model()  # once more, with room made
            self._append(self._assistant_message(reply))
            if self._last_usage is not None:
                self.meter.record(self._last_usage.prompt_tokens, self._last_usage.completion_tokens, len(self.messages))
            if not reply.calls:
                if reply.finish == "length":
                    raise StopTurn("length", reply.text + "\n[the reply hit the output token limit]")
                if reply.finish == "content_filter":
                    raise StopTurn("refusal", "the provider's content filter stopped the reply")
                feedback = await self._verify(reply.text)
                if feedback is None:
                    return reply.text
                self._append({"role": "user", "content": feedback})
                continue
            for call in reply.calls:
                await self._run_tool(call)

    async def _verify(self, answer: str) -> str | None:
        """Run the tests if something changed since they last passed; the failure report
        for the model, or None when there is nothing (more) to do."""
        verifier = self.verifier
        if verifier is None or self.policy.mode == "plan":
            return None
        unverified = verifier.unverified(self.ctx.changed_files)
        if unverified is None:
            return None
        changed = sorted(self.ctx.workspace.relative(p) for p in unverified)
        for command, narrowed in verifier.commands(changed):
            title = f"Run {'relevant ' if narrowed else ''}tests: {command}"
            run = await self._run_tests(command, title, lambda c=command, n=narrowed: verifier.run(c, n, self.ctx))
            if run is None:
                return None  # not approved: the model's answer stands
            if not run.ok:
                verifier.rounds += 1
                if verifier.rounds > MAX_VERIFY_ROUNDS:
                    failing = ", ".join(f.name for f in run.new_failures[:10])
                    raise StopTurn("tests_failed", f"{answer}\n[tests still failing after {MAX_VERIFY_ROUNDS} "
                                                   f"rounds of fixes: {failing}]")
                return prompts.render("tests_failed", command=command, summary=run.feedback())
            if run.already_failing and not verifier.told_preexisting:
                # Once per turn: the task may be to fix exactly these.
                verifier.told_preexisting = True
                return prompts.render("tests_preexisting", command=command, summary=run.preexisting())
        verifier.mark_verified(self.ctx.changed_files)
        return None

    async def _ensure_baseline(self) -> None:
        """Before the session's first change, run the suite once, so failures that were
        already there are not blamed on the agent."""
        verifier = self.verifier
        if verifier is None or self._baseline_tried or self.policy.mode == "plan":
            return
        self._baseline_tried = True
        title = f"Run tests before changing anything (baseline): {verifier.test.command}"
        await self._run_tests(verifier.test.command, title, lambda: verifier.run_baseline(self.ctx))

    async def _run_tests(self, command: str, title: str, runner: Callable[[], Awaitable[Any]]) -> Any:
        """`runner()` as a visible, approved step; None if it was not approved."""
        call = ToolCallDone(f"kimicode.tests:{self.steps}:{len(title)}", "shell", json.dumps({"command": command}))
        self._emit(ToolCallStarted(call.id, "run_tests", {"command": command}, title, "execute"))
        denial = await self._approve(call, title, "execute", {"command": command})
        if denial is not None:
            self._emit(ToolCallFinished(call.id, "run_tests", denial, True))
            return None
        started = time.monotonic()
        self.ctx.call_id = call.id
        run = await runner()
        outcome = run if isinstance(run, TestOutcome) else run.outcome
        display = {"tests": run.report()} if isinstance(run, TestRun) else {"baseline": outcome.counts}
        self._emit(ToolCallFinished(call.id, "run_tests", outcome.summary(), not outcome.passed, display,
                                    time.monotonic() - started))
        return run

    def _tokens_spent(self) -> int:
        return self.usage.prompt_tokens + self.usage.completion_tokens

    def _needs_compaction(self) -> bool:
        """Past COMPACT_AT of the window, and grown since the last compaction: when even the
        compacted history is that large, compacting again would only summarise the summary."""
        window = self.backend.info.context_window
        tokens = self.meter.tokens(self.messages)
        return tokens > COMPACT_AT * window and tokens > self._compacted_to + RECOMPACT_GROWTH * window

    async def compact(self, keep_tokens: int | None = None) -> bool:
        """Replace older turns by a model-written summary, keeping about `keep_tokens` of
        recent steps; False if there was nothing to compact."""
        if keep_tokens is None:
            keep_tokens = int(KEEP_RECENT * self.backend.info.context_window)
        plan = plan_compaction(self.messages, keep_tokens, self._request)
        if plan is None:
            return False
        before = self.meter.tokens(self.messages)
        messages = [self.messages[0]]
        if plan.older:
            note = prompts.render(
                "compacted",
                summary=await summarize(self.backend, plan.older, self._account),
                plan=_render_plan(self.plan),
                transcript=str(self.session.path) if self.session else "the session log",
            )
            messages.append({"role": "user", "content": note})
        if plan.latest_request is not None:
            messages.append(plan.latest_request)
        self.messages = messages + plan.kept
        if self.session:
            self.session.append("compaction", messages=self.messages)
        self.meter.reset()
        self.instructions.forget()  # nested AGENTS.md notes may have been summarised away
        self._compacted_to = self.meter.tokens(self.messages)
        self._emit(Compacted(before, self._compacted_to, len(plan.older)))
        return True

    async def _call_model(self) -> _Reply:
        text: list[str] = []
        reasoning: list[str] = []
        calls: list[ToolCallDone] = []
        finish = "stop"
        request = ChatRequest(self.messages, self.tools.schemas())
        self._last_usage = None
        async for event in self.backend.stream(request):
            match event:
                case TextDelta(text=piece):
                    text.append(piece)
                    self._emit(event)
                case ReasoningDelta(text=piece):
                    reasoning.append(piece)
                    self._emit(event)
                case ToolCallDone():
                    calls.append(event)
                case Usage():
                    self._last_usage = event
                    self._account(event)
                case Retrying():
                    text.clear(), reasoning.clear(), calls.clear()
                    self._emit(event)
                case Finish(reason=reason):
                    finish = reason
        if self._last_usage is None and not self._warned_no_usage:
            self._warned_no_usage = True
            log.warning("the endpoint reports no token usage: cost and --max-cost are not tracked")
        return _Reply("".join(text), "".join(reasoning), self._unique_ids(calls), finish)

    def _unique_ids(self, calls: list[ToolCallDone]) -> list[ToolCallDone]:
        """Give every call an id no earlier call in the session has."""
        taken = {c["id"] for m in self.messages for c in m.get("tool_calls") or ()}
        unique = []
        for call in calls:
            call_id, counter = call.id, len(taken)
            while not call_id or call_id in taken:
                call_id, counter = f"functions.{call.name}:{counter}", counter + 1
            taken.add(call_id)
            unique.append(ToolCallDone(call_id, call.name, call.arguments, call.arguments_error))
        return unique

    def _account(self, usage: Usage) -> None:
        self.usage += usage
        self.cost_usd += self.backend.info.cost(usage)
        self._emit(
            UsageUpdated(
                self.usage.prompt_tokens,
                self.usage.completion_tokens,
                self.usage.cached_tokens,
                self.cost_usd,
                usage.prompt_tokens + usage.completion_tokens,
                self.backend.info.context_window,
            )
        )
        if self.session:
            self.session.append(
                "usage",
                usage=[usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens],
                cost_usd=self.backend.info.cost(usage),
            )

    @staticmethod
    def _assistant_message(reply: _Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        if reply.calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in reply.calls
            ]
        return message

    # -- tools ----------------------------------------------------------------

    async def _run_tool(self, call: ToolCallDone) -> None:
        started = time.monotonic()
        arguments = arguments_object(call.arguments)
        tool = self.tools.get(call.name)
        title = call.name
        result: ToolResult | None = None
        params = None
        if tool is None:
            result = ToolResult(
                f"unknown tool {call.name!r}; the available tools are: {', '.join(self.tools.names)}",
                is_error=True,
            )
        elif call.arguments_error is not None:
            result = ToolResult(
                f"the arguments for {call.name} are not usable ({call.arguments_error}); "
                "call it again with a JSON object that matches its schema",
                is_error=True,
            )
        else:
            try:
                params = tool.parse(arguments)
                title = tool.title(params)
            except ToolError as exc:
                result = ToolResult(str(exc), is_error=True)
        kind = tool.kind if tool else "other"
        self._emit(ToolCallStarted(call.id, call.name, arguments, title, kind))
        if result is None and tool is not None:
            denial = await self._approve(call, title, kind, arguments)
            if denial is not None:
                result = ToolResult(denial, is_error=True)
            else:
                changes_files = tool.kind in ("edit", "delete", "move") or (
                    call.name == "shell" and assess(arguments["command"], self.ctx.workspace.root).risk != "read_only"
                )
                if changes_files:
                    await self._ensure_baseline()
                if changes_files and call.name == "shell":
                    await self._checkpoint(f"before shell: {' '.join(arguments['command'].split())[:60]}")
                self.ctx.call_id = call.id
                result = await tool.execute(params, self.ctx)
                result = self._with_local_instructions(params, result)
                self._note_shell_effects(call.name, arguments, result)
        assert result is not None
        repeats = self._count_failure(call, result)
        output = result.output
        if repeats >= LOOP_WARN_AT:
            output += (f"\n[This exact call has now failed {repeats} times with the same result. "
                       "Do not repeat it: change the arguments or take another approach.]")
        self._append({"role": "tool", "tool_call_id": call.id, "content": output})
        self._emit(
            ToolCallFinished(call.id, call.name, output, result.is_error, result.display, time.monotonic() - started)
        )
        if repeats >= LOOP_STOP_AT:
            raise StopTurn("loop", f"stopped: {call.name} failed {repeats} times with identical arguments and "
                                   f"result ({result.output.splitlines()[0][:200] if result.output else 'no output'})")

    async def _checkpoint(self, label: str) -> None:
        """Snapshot the work tree; undoing to it rewinds the history to what it is now
        (calls of the current step not yet answered get an "interrupted" result on resume).
        A failure is logged, never fatal: the agent works without undo."""
        if self.checkpoints is None:
            return
        turn = len(self.messages)
        try:
            checkpoint = await asyncio.to_thread(self.checkpoints.create, label, turn)
        except (CheckpointError, OSError) as exc:
            log.warning("no checkpoint: %s", exc)
            return
        if self.session:
            self.session.append("checkpoint", id=checkpoint.id, label=label, turn=turn)
        if label.startswith(TURN_LABEL):
            self.turn_checkpoints.append((checkpoint.id, list(self.messages)))
        self._emit(CheckpointCreated(checkpoint.id, label))

    def _note_shell_effects(self, tool_name: str, arguments: dict[str, Any], result: ToolResult) -> None:
        command = arguments.get("command")
        if self.verifier and tool_name == "shell" and isinstance(command, str):
            read_only = assess(command, self.ctx.workspace.root).risk == "read_only"
            self.verifier.note_command(command, result.display.get("exit_code"), read_only, self.ctx.changed_files)

    def _with_local_instructions(self, params: Any, result: ToolResult) -> ToolResult:
        """Add the AGENTS.md of a folder the first time a call touches it."""
        path = getattr(params, "path", None) or getattr(params, "cwd", None)
        notes = self.instructions.for_path(path) if isinstance(path, str) and not result.is_error else ""
        return dataclasses.replace(result, output=f"{result.output}\n\n{notes}") if notes else result

    def _count_failure(self, call: ToolCallDone, result: ToolResult) -> int:
        """How often this exact failing call (same tool, arguments and result, with no file
        edited in between) happened this turn; work that succeeds or varies never counts."""
        if not result.is_error:
            tool = self.tools.get(call.name)
            if tool is not None and tool.kind in ("edit", "delete", "move"):
                self._edits += 1
            return 0
        signature = (call.name, call.arguments, result.output, self._edits)
        self._failures[signature] += 1
        return self._failures[signature]

    async def _approve(self, call: ToolCallDone, title: str, kind: Any, arguments: dict[str, Any]) -> str | None:
        """None when the call may run, else the refusal the model reads."""
        verdict = self.policy.check(call.name, kind, arguments)
        if verdict.action == "allow":
            return None
        if verdict.action == "deny":
            return f"not run: {verdict.reason}"
        reply: asyncio.Future[Approval] = asyncio.get_running_loop().create_future()
        self._emit(ApprovalRequested(call.id, call.name, title, kind, verdict.reason, verdict.rules, reply))
        # Shielded: a cancelled turn leaves the future pending, so a front end that
        # answers late does not hit a cancelled future.
        approval = await asyncio.shield(reply)
        if approval.decision is Decision.ALLOW_ALWAYS:
            self.policy.remember(verdict.rules)
        if approval.decision is Decision.DENY:
            note = f" The user says: {approval.note}" if approval.note else ""
            return f"not run: the user denied this ({verdict.reason}).{note}"
        return None

    # -- history --------------------------------------------------------------

    def rewind(self, history: list[dict[str, Any]]) -> None:
        """Replace the conversation by an earlier state of it (undo); the system prompt stays current."""
        system = self.messages[0]
        self.messages = [system, *history[1:]] if history else [system]
        self.meter.reset()
        self.instructions.forget()
        self._compacted_to = 0
        self._request = None

    def _append(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if self.session:
            self.session.append("message", message=message)

    def _set_system_prompt(self, text: str) -> None:
        if self.messages[0] != {"role": "system", "content": text}:
            self.messages[0] = {"role": "system", "content": text}
            if self.session:
                self.session.append("system", content=text)

    def _close_open_calls(self, why: str) -> None:
        """Answer the calls of the last step that have no result (a cancel, a crash, an
        undo to the middle of a step), so the history stays valid."""
        last = max((i for i, m in enumerate(self.messages) if m.get("tool_calls")), default=None)
        if last is None or any(m["role"] != "tool" for m in self.messages[last + 1 :]):
            return
        answered = {m["tool_call_id"] for m in self.messages[last + 1 :]}
        for call in self.messages[last]["tool_calls"]:
            if call["id"] not in answered:
                self._append({"role": "tool", "tool_call_id": call["id"], "content": f"no result: {why}"})


def _render_plan(items: tuple[PlanItem, ...]) -> str:
    if not items:
        return ""
    return "\nCurrent plan:\n" + "\n".join(f"- [{item.status}] {item.step}" for item in items) + "\n"
