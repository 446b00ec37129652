import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from kimicode.events import ToolOutput
from kimicode.tools import shell
from kimicode.tools.base import ToolContext
from tests.processes import gone, running
from kimicode.tools.shell import HeadTail, Shell
from kimicode.workspace import Workspace


@pytest.fixture
def events() -> list[ToolOutput]:
    return []


@pytest.fixture
def ctx(tmp_path: Path, events) -> ToolContext:
    return ToolContext(Workspace(tmp_path), emit=events.append, call_id="call-1")


async def sh(ctx, command, **kw):
    return await Shell()({"command": command, **kw}, ctx)


async def test_output_and_exit_code(ctx):
    result = await sh(ctx, "echo out; echo err >&2")
    assert not result.is_error
    assert result.output == "out\nerr\n[exit code 0]"
    assert result.display == {"command": "echo out; echo err >&2", "exit_code": 0, "output": "out\nerr\n"}


async def test_non_zero_exit_is_not_a_tool_error(ctx):
    result = await sh(ctx, "echo failing; exit 3")
    assert not result.is_error
    assert result.output == "failing\n[exit code 3]"
    assert result.display["exit_code"] == 3


async def test_no_output(ctx):
    assert (await sh(ctx, "true")).output == "(no output)\n[exit code 0]"


async def test_runs_in_the_workspace_with_pagers_off_and_no_stdin(ctx, tmp_path):
    result = await sh(ctx, 'pwd; echo "$PAGER $GIT_PAGER $TERM"; cat; echo done')
    assert result.output == f"{tmp_path}\ncat cat dumb\ndone\n[exit code 0]"


async def test_cwd_inside_the_workspace(ctx, tmp_path):
    (tmp_path / "sub").mkdir()
    assert (await sh(ctx, "pwd", cwd="sub")).output.startswith(f"{tmp_path / 'sub'}\n")


async def test_cwd_escape_and_non_directory_are_refused(ctx, tmp_path):
    (tmp_path / "file.txt").write_text("")
    for cwd in ("..", "/", "file.txt", "missing"):
        result = await sh(ctx, "touch escaped", cwd=cwd)
        assert result.is_error, cwd
    assert not (tmp_path.parent / "escaped").exists()


async def test_long_output_keeps_head_and_tail(ctx):
    result = await sh(ctx, "seq 1 100000")
    assert result.output.startswith("1\n2\n3\n")
    assert result.output.endswith("99999\n100000\n[exit code 0]")
    assert "bytes cut from the middle" in result.output
    assert len(result.output) < 31_000


def test_head_tail_counts_the_cut_bytes():
    buffer = HeadTail(4, 3)
    for chunk in (b"ab", b"cdef", b"ghij"):
        buffer.add(chunk)
    assert buffer.text() == "abcd\n[... 3 bytes cut from the middle of the output ...]\nhij"
    small = HeadTail(4, 3)
    small.add("héllo".encode())
    assert small.text() == "héllo"


async def test_streams_output_while_running(ctx, events):
    await sh(ctx, "echo one; sleep 0.1; echo two")
    assert all(event.call_id == "call-1" for event in events)
    assert "".join(event.text for event in events) == "one\ntwo\n"
    assert len(events) == 2


async def test_timeout_kills_the_whole_process_group(ctx):
    started = time.monotonic()
    result = await sh(ctx, "sleep 30 & echo $!; sleep 30", timeout=0.5)
    assert time.monotonic() - started < 3
    assert result.is_error
    assert "timed out after 0.5 s" in result.output
    background = int(result.output.split()[0])
    assert gone(background)


async def test_default_timeout_comes_from_the_context(ctx):
    ctx.shell_timeout = 0.3
    result = await sh(ctx, "echo partial; sleep 30")
    assert result.is_error and result.output.startswith("partial\n[timed out after 0.3 s")


async def test_timeout_escalates_to_sigkill(ctx, monkeypatch):
    monkeypatch.setattr(shell, "KILL_GRACE_S", 0.2)
    result = await sh(ctx, "trap '' TERM; echo $$; sleep 30", timeout=0.3)
    assert result.is_error
    assert gone(int(result.output.split()[0]))


async def test_cancellation_kills_children(ctx, events):
    task = asyncio.create_task(sh(ctx, "sleep 30 & echo $!; sleep 30"))
    while not events:
        await asyncio.sleep(0.02)
    background = int(events[0].text.split()[0])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone(background)


async def test_background_job_holding_the_output_is_stopped(ctx):
    started = time.monotonic()
    result = await sh(ctx, "(sleep 30; echo late) & echo $!")
    assert time.monotonic() - started < 3
    assert not result.is_error and result.output.endswith("were stopped]\n[exit code 0]")
    assert gone(int(result.output.split()[0]))


async def test_background_job_with_redirected_output_keeps_running(ctx):
    result = await sh(ctx, "sleep 30 > /dev/null 2>&1 & echo $!")
    pid = int(result.output.split()[0])
    try:
        assert result.output.endswith("\n[exit code 0]") and "stopped" not in result.output
        assert running(pid)
    finally:
        os.kill(pid, signal.SIGKILL)


async def test_timeout_must_be_positive_and_at_most_600(ctx):
    assert (await sh(ctx, "true", timeout=0)).is_error
    assert (await sh(ctx, "true", timeout=601)).is_error


def test_title():
    assert Shell().title(Shell.Params(command="git status")) == "$ git status"
    assert Shell().title(Shell.Params(command="cd x\nmake")) == "$ cd x …"
    assert len(Shell().title(Shell.Params(command="x" * 200))) == 82


async def test_live_output_is_bounded_but_the_model_still_gets_head_and_tail(ctx, events):
    result = await sh(ctx, "head -c 3000000 /dev/zero | tr '\\0' 'x'; echo; echo THE-END")
    live = "".join(e.text for e in events)
    assert len(live) < 300 * 1024
    assert "live output stops here after 256 KB" in live
    assert result.output.endswith("THE-END\n[exit code 0]")


async def test_inherited_cdpath_and_bash_env_are_dropped(ctx, tmp_path, monkeypatch):
    outside = tmp_path.parent / "cdpath-target"
    (outside / "sub").mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("CDPATH", str(outside))
    monkeypatch.setenv("BASH_ENV", str(outside / "evil.sh"))
    (outside / "evil.sh").write_text("echo EVIL\n")
    (tmp_path / "sub").mkdir()
    result = await sh(ctx, "cd sub && pwd")
    assert str(tmp_path / "sub") in result.output and "EVIL" not in result.output
