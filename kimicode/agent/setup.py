"""Assemble an Agent from settings: the one place front ends get theirs from."""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kimicode import prompts
from kimicode.agent.instructions import ProjectInstructions
from kimicode.agent.checkpoints import CheckpointError, CheckpointStore
from kimicode.agent.loop import Agent, Limits
from kimicode.agent.testing import detect_test_command
from kimicode.agent.verify import Verifier
from kimicode.agent.session import SessionError, SessionLog, SessionState
from kimicode.approval import ApprovalPolicy, RuleStore
from kimicode.index.indexer import RepoIndex
from kimicode.index.repomap import default_budget, render_map
from kimicode.backends.base import Backend
from kimicode.config import ApprovalMode, ConfigError, Endpoint, Settings, resolve_endpoint
from kimicode.paths import project_grants_path
from kimicode.tools.base import Tool, ToolContext, ToolRegistry
from kimicode.tools.plan import UpdatePlan
from kimicode.tools.registry import builtin_tools
from kimicode.tools.symbols import FindReferences, FindSymbol, RepoMap
from kimicode.workspace import Workspace

log = logging.getLogger(__name__)


def create_agent(
    settings: Settings,
    workspace_root: Path,
    *,
    default_mode: ApprovalMode,
    resume: SessionState | None = None,
    extra_tools: Sequence[Tool[Any]] = (),
    load_progress: bool = False,
) -> Agent:
    """An agent for `workspace_root`, continuing the session `resume` if given.

    `extra_tools` (MCP servers' tools, say) come after the built-in ones; one whose
    name a built-in tool already has is left out, with a warning."""
    endpoint = resolve_endpoint(settings)
    mode = settings.approval_mode or default_mode
    workspace = Workspace(workspace_root)
    backend = create_backend(settings, endpoint, progress=load_progress)
    policy = ApprovalPolicy(
        mode,
        workspace.root,
        allow=settings.permissions.allow,
        deny=settings.permissions.deny,
        store=RuleStore(project_grants_path(workspace.root)),
    )
    if resume is not None:
        if resume.meta.get("cwd") != str(workspace.root):
            raise SessionError(
                f"session {resume.id} belongs to {resume.meta.get('cwd')}; run kimicode there (or with -C)"
            )
        session = SessionLog.reopen(resume)
    else:
        session = SessionLog.create(cwd=str(workspace.root), model=endpoint.model.name, provider=endpoint.provider)
    index = _open_index(workspace) if settings.repo_map else None
    repo_map = RepoMapSection(index, settings.repo_map_tokens or default_budget(endpoint.model.context_window))
    symbol_tools = [FindSymbol(), FindReferences(), RepoMap()] if index else []
    ctx = ToolContext(workspace, shell_timeout=settings.shell_timeout, index=index)
    # Files the agent edited weigh more in the map; they change only when files change,
    # which rebuilds the map anyway, so this costs no extra prompt-cache misses.
    edited = lambda: {workspace.relative(path) for path in ctx.changed_files}  # noqa: E731
    tools: list[Tool[Any]] = [*builtin_tools(), *symbol_tools, UpdatePlan()]
    for tool in extra_tools:
        if any(tool.name == known.name for known in tools):
            log.warning("tool %s is left out: another tool has that name", tool.name)
        else:
            tools.append(tool)
    return Agent(
        backend,
        ToolRegistry(tools),
        policy,
        ctx,
        lambda: system_prompt(workspace, policy.mode, repo_map.text(edited())),
        Limits(settings.max_steps, settings.max_cost, settings.max_tokens, settings.timeout),
        session,
        resume,
        _verifier(settings, workspace.root),
        _checkpoints(settings, workspace.root),
    )


def create_backend(settings: Settings, endpoint: Endpoint | None = None, *, progress: bool = False) -> Backend:
    """The backend the settings choose (raises ConfigError when they choose none that works)."""
    endpoint = endpoint or resolve_endpoint(settings)
    if endpoint.provider == "local":
        return _local_backend(settings, endpoint, progress)
    from kimicode.backends.openai_compat import OpenAICompatBackend, RetryPolicy  # loads openai

    return OpenAICompatBackend(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        info=endpoint.model,
        retry=RetryPolicy(**settings.retry.model_dump()),
        request_timeout=settings.request_timeout,
        headers=endpoint.headers,
    )


def _local_backend(settings: Settings, endpoint: Endpoint, progress: bool) -> Backend:
    """The in-process engine; torch loads here and only here. `progress`: a loading bar on
    stderr (only a headless run on a terminal wants one; the TUI and ACP own the screen)."""
    try:
        from kimicode.backends.base import BackendError
        from kimicode.backends.k2.backend import LocalBackend, LocalOptions
        from kimicode.backends.k2.config import CheckpointError
    except ImportError as exc:
        raise ConfigError(
            f"backend 'local' needs the engine extra ({exc.name} is missing): pip install 'kimicode[engine]'"
        ) from exc
    local = settings.local
    options = LocalOptions(local.device, local.dtype, local.quant, local.experts_on_cpu, local.top_p, local.seed)
    try:
        return LocalBackend.load(endpoint.base_url, endpoint.model, options, progress=progress)
    except (CheckpointError, BackendError) as exc:
        raise ConfigError(str(exc)) from exc


def _checkpoints(settings: Settings, root: Path) -> CheckpointStore | None:
    if not settings.checkpoints:
        return None
    try:
        return CheckpointStore.for_workspace(root)
    except CheckpointError as exc:
        log.warning("checkpoints are off, so there is no undo: %s", exc)
        return None


def _verifier(settings: Settings, root: Path) -> Verifier | None:
    if not settings.auto_test:
        return None
    test = detect_test_command(root, settings.test_command)
    return Verifier(test) if test else None


def system_prompt(workspace: Workspace, mode: str, repo_map: str = "") -> str:
    return prompts.render(
        "system",
        workspace=str(workspace.root),
        platform=f"{platform.system()} {platform.release()}",
        date=time.strftime("%Y-%m-%d"),
        mode=mode,
        mode_note=_MODE_NOTES.get(mode, ""),
        project_instructions=ProjectInstructions(workspace).root(),
        repo_map=f"\n# Repository map (most used definitions, file:line)\n{repo_map}\n" if repo_map else "",
    )


def _open_index(workspace: Workspace) -> RepoIndex | None:
    try:
        return RepoIndex(workspace)
    except Exception as exc:  # the map is optional: an unusable cache folder must not stop the agent
        log.warning("no repository index: %s", exc)
        return None


class RepoMapSection:
    """The repo map for the system prompt, rebuilt only when files changed, so the
    prompt (and the provider's cache of it) stays the same otherwise."""

    def __init__(self, index: RepoIndex | None, tokens: int):
        self._index = index
        self._tokens = tokens
        self._text = ""
        self._rendered: tuple[int, frozenset[str]] | None = None  # (index generation, focus) of _text

    def text(self, focus_files: set[str] = frozenset()) -> str:
        if self._index is None:
            return ""
        try:
            if self._rendered is None or self._index.changed_since_last_update():
                self._index.update()
            # Also after a tool (or another kimicode) updated the index: compare generations.
            state = (self._index.generation, frozenset(focus_files))
            if state != self._rendered:
                self._text = render_map(self._index.store.file_tags(), self._tokens, focus_files)
                self._rendered = state
        except Exception as exc:  # the map is optional: a broken or busy cache must not stop the agent
            log.warning("no repo map this turn: %s", exc)
        return self._text


_MODE_NOTES = {
    "plan": (
        " — you may read and search, but not edit files or run commands that change anything. Investigate, "
        "keep the plan with update_plan, then reply with a concrete plan (files, changes, how to test it) and "
        "stop: the user switches modes to carry it out."
    ),
}
