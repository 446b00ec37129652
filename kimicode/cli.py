"""The `kimicode` command. Keep imports here light: `kimicode --help` must stay fast,
so the agent, openai, textual and torch load only inside the commands that need them."""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    add_completion=False,
    help="kimicode: a coding agent for the Kimi K2 models.\n\n"
    "Run `kimicode` in a repository for the interactive app, or `kimicode --task \"…\"` for a headless run (CI).",
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


from kimicode.engine_cli import bench_app, engine_app  # noqa: E402  (light: typer only)

app.add_typer(engine_app, name="engine")
app.add_typer(bench_app, name="bench")


class Backend(str, Enum):
    api = "api"
    local = "local"


class OutputFormat(str, Enum):
    text = "text"
    json = "json"
    stream_json = "stream-json"


class Mode(str, Enum):
    ask = "ask"
    auto_edit = "auto-edit"
    auto = "auto"
    yolo = "yolo"
    plan = "plan"


@app.callback(invoke_without_command=True)
def main_command(
    ctx: typer.Context,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="Run this task headless and exit; '-' reads it from stdin.")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--output-format", "-o", help="Headless output: text | json | stream-json.")] = OutputFormat.text,
    provider: Annotated[Optional[str], typer.Option(help="Provider name from the config (moonshot, openrouter, custom, …).")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible endpoint URL (vLLM, SGLang, a proxy).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model id.")] = None,
    backend: Annotated[Optional[Backend], typer.Option(help="api (default) or local: the in-process engine on --model-path.")] = None,
    model_path: Annotated[Optional[Path], typer.Option(help="K2-family checkpoint folder for --backend local.")] = None,
    approval_mode: Annotated[Optional[Mode], typer.Option(help="ask | auto-edit | auto (headless default) | yolo | plan.")] = None,
    yolo: Annotated[bool, typer.Option("--yolo", help="Allow everything except the hard deny-list.")] = False,
    plan: Annotated[bool, typer.Option("--plan", help="Plan mode: read and investigate only, answer with a plan.")] = False,
    test_cmd: Annotated[Optional[str], typer.Option("--test-cmd", help="How to run the tests (default: detected).")] = None,
    no_auto_test: Annotated[bool, typer.Option("--no-auto-test", help="Do not run the tests after edits.")] = False,
    auto_commit: Annotated[bool, typer.Option("--auto-commit", help="Commit the task's changes on the current branch when it succeeds.")] = False,
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="Most model calls for the task.")] = None,
    max_cost: Annotated[Optional[float], typer.Option(min=0.0, help="Stop once the task has cost this many USD.")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(min=1, help="Stop once the task has used this many tokens (in + out).")] = None,
    timeout: Annotated[Optional[float], typer.Option(min=0.0, help="Stop the task after this many seconds.")] = None,
    cwd: Annotated[Optional[Path], typer.Option("--cwd", "-C", help="Workspace directory (default: the current one).")] = None,
    continue_: Annotated[bool, typer.Option("--continue", "-c", help="Continue the most recent session of this workspace.")] = False,
    resume: Annotated[Optional[str], typer.Option("--resume", "-r", help="Continue the session with this id (see `kimicode sessions`).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging to stderr.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        from kimicode import __version__

        print(f"kimicode {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is not None:
        return
    if yolo and plan:
        raise typer.BadParameter("--yolo contradicts --plan", param_hint="--yolo")
    shortcut = Mode.yolo if yolo else Mode.plan if plan else None
    if shortcut and approval_mode not in (None, shortcut):
        raise typer.BadParameter(f"--{shortcut.value} contradicts --approval-mode", param_hint=f"--{shortcut.value}")
    approval_mode = shortcut or approval_mode
    if continue_ and resume:
        raise typer.BadParameter("use either --continue or --resume", param_hint="--continue")
    flags = {
        **_model_flags(provider, base_url, model, backend, model_path),
        "approval_mode": approval_mode.value if approval_mode else None,
        "max_steps": max_steps,
        "max_cost": max_cost,
        "max_tokens": max_tokens,
        "test_command": test_cmd,
        "auto_test": False if no_auto_test else None,
        "auto_commit": True if auto_commit else None,
        "timeout": timeout,
    }
    workspace = (cwd or Path.cwd()).resolve()
    if not workspace.is_dir():
        _fail(f"--cwd {workspace} is not a directory")
    session = "latest" if continue_ else resume
    if task is None:
        raise typer.Exit(_run_tui(workspace, flags, session, verbose))
    # Bytes in, replacement characters for anything that is not UTF-8: a stray byte in
    # a task must not crash the run (argv arrives with such bytes as lone surrogates).
    if task == "-":
        task = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    task = task.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    if not task.strip():
        _fail("the task is empty")
    _setup_logging(verbose)
    raise typer.Exit(_run_headless(task, output_format.value, workspace, flags, session))


@app.command()
def sessions(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Sessions of every workspace, not just this one.")] = False,
    cwd: Annotated[Optional[Path], typer.Option("--cwd", "-C", help="Workspace directory (default: the current one).")] = None,
) -> None:
    """List sessions, most recent first; continue one with `kimicode --resume ID --task …`."""
    from kimicode.agent.session import list_sessions

    workspace = None if all_ else (cwd or Path.cwd()).resolve()
    found = list_sessions(workspace)
    if not found:
        print("no sessions" + ("" if all_ else " for this workspace (try --all)"))
        return
    for state in found:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(state.updated))
        prompt = " ".join(state.first_prompt.split())[:60]
        where = f"  {state.meta.get('cwd', '')}" if all_ else ""
        print(f"{state.id}  {when}  {len(state.messages):>4} msgs  {prompt}{where}")


@app.command()
def init(
    cwd: Annotated[Optional[Path], typer.Option("--cwd", "-C", help="Workspace directory (default: the current one).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model id.")] = None,
) -> None:
    """Draft an AGENTS.md for this repository (the agent reads the repo, then writes it)."""
    from kimicode import prompts

    workspace = (cwd or Path.cwd()).resolve()
    _setup_logging(False)
    # auto-edit: it may write AGENTS.md; commands beyond read-only ones are refused.
    flags = {"model": model, "approval_mode": "auto-edit", "auto_test": False}
    raise typer.Exit(_run_headless(prompts.render("init"), "text", workspace, flags, None))


@app.command()
def undo(
    checkpoint: Annotated[Optional[str], typer.Argument(help="Checkpoint id, prefix or position (1 = newest); default: before the last turn.")] = None,
    list_: Annotated[bool, typer.Option("--list", "-l", help="List the checkpoints instead.")] = False,
    cwd: Annotated[Optional[Path], typer.Option("--cwd", "-C", help="Workspace directory (default: the current one).")] = None,
) -> None:
    """Put the files back as they were at a checkpoint and rewind the conversation to match."""
    from kimicode.agent.checkpoints import CheckpointError, CheckpointStore
    from kimicode.agent.session import SessionError
    from kimicode.agent.undo import undo as undo_to

    workspace = (cwd or Path.cwd()).resolve()
    try:
        if list_:
            checkpoints = CheckpointStore.for_workspace(workspace).list()
            if not checkpoints:
                print("no checkpoints yet: kimicode takes them when it runs a task here")
            for position, cp in enumerate(checkpoints, 1):
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cp.created))
                print(f"{position:>3}  {cp.id[:10]}  {when}  {cp.label}")
            return
        result = undo_to(workspace, checkpoint)
    except (CheckpointError, SessionError) as exc:
        _fail(str(exc))
    print(f"restored {result.restored.id[:10]} ({result.restored.label})")
    if result.session_id:
        print(f"rewound session {result.session_id} to {result.history_length} messages")
    print(f"to undo this undo: kimicode undo {result.saved.id[:10]}")


@app.command()
def acp(
    provider: Annotated[Optional[str], typer.Option(help="Provider name from the config (moonshot, openrouter, custom, …).")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible endpoint URL (vLLM, SGLang, a proxy).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model id.")] = None,
    backend: Annotated[Optional[Backend], typer.Option(help="api (default) or local: the in-process engine on --model-path.")] = None,
    model_path: Annotated[Optional[Path], typer.Option(help="K2-family checkpoint folder for --backend local.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging to stderr.")] = False,
) -> None:
    """Serve the Agent Client Protocol on stdin/stdout, for editors (Zed, JetBrains, Neovim, Emacs)."""
    import asyncio

    import os
    import stat

    from kimicode.acp.stdio import serve

    if not stat.S_ISFIFO(os.fstat(1).st_mode) and not stat.S_ISSOCK(os.fstat(1).st_mode):
        _fail("`kimicode acp` talks to an editor over pipes; configure your editor to start it (docs/editors.md)")
    _setup_logging(verbose)  # stderr: stdout carries only protocol frames
    flags = _model_flags(provider, base_url, model, backend, model_path)
    asyncio.run(serve({k: v for k, v in flags.items() if v is not None}))


@app.command()
def index(
    path: Annotated[Optional[Path], typer.Argument(help="Repository folder (default: the current one).")] = None,
) -> None:
    """Build or update the symbol index (cached in .kimicode/cache/) and print what it holds."""
    _, stats = _updated_index(path)
    languages = ", ".join(f"{name} {count}" for name, count in sorted(stats.languages.items()) if name) or "none"
    print(f"{stats.files} files ({stats.parsed} parsed, {stats.removed} removed) in {stats.seconds:.2f} s")
    print(f"{stats.defs} definitions, {stats.refs} references; languages: {languages}")


@app.command(name="map")
def repo_map(
    path: Annotated[Optional[Path], typer.Argument(help="Repository folder (default: the current one).")] = None,
    tokens: Annotated[int, typer.Option("--tokens", "-n", min=64, help="Size budget in tokens.")] = 2_048,
    focus: Annotated[Optional[list[str]], typer.Option("--focus", "-f", help="A file or identifier to centre on (repeatable).")] = None,
) -> None:
    """Print the ranked repo map: the most used definitions, grouped by file."""
    from kimicode.index.repomap import render_map

    repo_index, _ = _updated_index(path)
    files = repo_index.store.file_tags()
    known = {f.path for f in files}
    focus_files = {item for item in focus or () if item in known}
    print(render_map(files, tokens, focus_files, set(focus or ()) - focus_files))


@app.command()
def symbols(
    name: Annotated[str, typer.Argument(help="Symbol name (exact), or part of it with --fuzzy.")],
    fuzzy: Annotated[bool, typer.Option("--fuzzy", help="Match names containing NAME, ignoring case.")] = False,
    path: Annotated[Optional[Path], typer.Option("--cwd", "-C", help="Repository folder (default: the current one).")] = None,
) -> None:
    """Print where a symbol is defined (file:line and signature)."""
    import asyncio

    from kimicode.tools.base import ToolContext
    from kimicode.tools.symbols import FindSymbol
    from kimicode.workspace import Workspace

    repo_index, _ = _updated_index(path)
    ctx = ToolContext(Workspace(repo_index.workspace.root), index=repo_index)
    result = asyncio.run(FindSymbol()({"name": name, "fuzzy": fuzzy}, ctx))
    print(result.output)
    if result.is_error or result.output.startswith("no definition"):
        raise typer.Exit(1)


def _updated_index(path: Path | None):  # -> (RepoIndex, IndexStats)
    """The index of `path`, brought up to date; a clear message instead of a traceback."""
    import sqlite3

    from kimicode.index.indexer import IndexTooLarge, RepoIndex
    from kimicode.workspace import Workspace

    root = (path or Path.cwd()).resolve()
    if not root.is_dir():
        _fail(f"{root} is not a directory")
    try:
        index = RepoIndex(Workspace(root))
        return index, index.update()
    except (IndexTooLarge, OSError, sqlite3.Error) as exc:
        _fail(f"cannot index {root}: {exc}")


def _load_session(session: str, workspace: Path):  # -> SessionState
    from kimicode.agent.session import SessionError, find_session, list_sessions

    if session != "latest":
        return find_session(session)
    found = list_sessions(workspace)
    if not found:
        raise SessionError(f"no earlier session in {workspace} to continue")
    return found[0]


def _run_headless(task: str, output_format: str, workspace: Path, flags: dict[str, object], session: str | None) -> int:
    import asyncio
    import signal

    from kimicode.agent.session import SessionError
    from kimicode.agent.setup import create_agent
    from kimicode.config import ConfigError, load_settings
    from kimicode.headless import EXIT_USAGE, run_task, write_setup_failure

    for stream in (sys.stdout, sys.stderr):  # odd bytes in file names must not crash output
        stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]

    def setup_failed(exc: Exception) -> int:
        message = f"cannot set up: {exc}" if isinstance(exc, OSError) else str(exc)
        print(f"kimicode: {message}", file=sys.stderr)
        write_setup_failure(output_format, message)  # type: ignore[arg-type]
        return EXIT_USAGE

    try:
        settings = load_settings(workspace, flags)
        resumed = _load_session(session, workspace) if session else None
    except (ConfigError, SessionError, OSError) as exc:
        return setup_failed(exc)

    async def main() -> int:
        from kimicode.mcp_tools import McpHub

        hub = await McpHub.start(settings.mcp_servers, cwd=workspace)
        for problem in hub.errors:  # a broken MCP server costs its tools, not the run
            print(f"kimicode: {problem}", file=sys.stderr)
        try:
            agent = create_agent(settings, workspace, default_mode="auto", resume=resumed, extra_tools=hub.tools,
                                 load_progress=sys.stderr.isatty())
        except (ConfigError, SessionError, OSError) as exc:
            await hub.close()
            return setup_failed(exc)
        loop = asyncio.get_running_loop()
        run = asyncio.ensure_future(
            run_task(agent, task, output_format, auto_commit=settings.auto_commit)  # type: ignore[arg-type]
        )

        def interrupt() -> None:
            # During the turn, cancel just the turn: it cleans up and reports itself.
            agent.cancel() if agent.busy else run.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupt)
        try:
            return await run
        finally:
            await agent.backend.aclose()
            await hub.close()

    return asyncio.run(main())


def _run_tui(workspace: Path, flags: dict[str, object], session: str | None, verbose: bool) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        _fail("the interactive app needs a terminal; for scripts and CI use --task \"…\" (see --help)")
    import logging

    from kimicode.paths import data_dir
    from kimicode.tui.app import KimicodeApp

    # The screen belongs to the app: logs go to a file.
    log_file = data_dir() / "kimicode.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, filename=log_file,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = KimicodeApp(workspace, {k: v for k, v in flags.items() if v is not None}, session)
    code = app.run()
    return code if isinstance(code, int) else (app.return_code or 0)


def _model_flags(provider, base_url, model, backend: Backend | None, model_path: Path | None) -> dict[str, object]:
    """The flags that choose the model, as settings keys (shared by the main command and acp)."""
    return {
        "provider": provider,
        "base_url": base_url,
        "model": model,
        "backend": backend.value if backend else None,
        "model_path": str(model_path.resolve()) if model_path else None,
    }


def _setup_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _fail(message: str) -> None:
    print(f"kimicode: {message}", file=sys.stderr)
    raise typer.Exit(2)


def main() -> None:
    # The two starts that users wait on skip typer, whose argument coercion imports pydantic
    # (~230 ms): a bare `kimicode` (the app's first frame) and `kimicode acp` (an editor's
    # `initialize`). Everything else goes through typer.
    fast = {(): lambda: _run_tui(Path.cwd().resolve(), {}, None, verbose=False), ("acp",): acp}.get(tuple(sys.argv[1:]))
    if fast is None:
        app()
        return
    try:
        code = fast()
    except typer.Exit as stop:  # _fail() outside typer
        code = stop.exit_code
    sys.exit(code or 0)
