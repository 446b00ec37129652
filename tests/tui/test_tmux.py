"""`kimicode` in a real terminal: tmux runs it, send-keys types, capture-pane reads the screen."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.fakes.openai_server import Reply, ToolCall
from tests.processes import gone

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(self, command: str, cwd, width: int = 110, height: int = 32):
        self.socket = f"kimicode-test-{uuid.uuid4().hex[:8]}"
        self.run("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), "-c", str(cwd),
                 command)

    def run(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10)
        return done.stdout

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "t")

    def pane(self, field: str) -> str:
        return self.run("display-message", "-p", "-t", "t", f"#{{{field}}}").strip()

    def wait_for(self, condition, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; the pane shows:\n{self.screen()}")
            time.sleep(0.05)

    def close(self) -> None:
        self.run("kill-server")


@pytest.fixture
def tmux_kimicode(fake_openai, repo, isolated_home):
    sessions = []

    def start(*args: str) -> Tmux:
        env = {
            "HOME": str(isolated_home),
            "XDG_CONFIG_HOME": str(isolated_home / "config"),
            "XDG_DATA_HOME": str(isolated_home / "data"),
            "KIMICODE_PROVIDER": "custom",
            "KIMICODE_BASE_URL": fake_openai.base_url,
            "KIMICODE_MODEL": "kimi-k2-0905-preview",
            "TERM": "xterm-256color",
            "PATH": os.environ["PATH"],
        }
        assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
        # The shell stays after kimicode exits, so the terminal state it left can be read.
        command = (f"env -i {assignments} {shlex.quote(sys.executable)} -m kimicode {' '.join(args)}; "
                   "echo kimicode-exit=$?; sleep 60")
        session = Tmux(command, repo)
        sessions.append(session)
        return session

    yield start
    for session in sessions:
        session.close()


def test_a_user_session_in_a_real_terminal(tmux_kimicode, fake_openai, repo):
    fake_openai.script(
        Reply(text="Hello from **kimicode**."),
        Reply(tool_calls=[ToolCall("shell", {"command": "echo $$ > pid; echo started; sleep 60"})]),
    )
    term = tmux_kimicode("--yolo")
    term.wait_for(lambda: "shift+tab mode" in term.screen() and "⎇ main" in term.screen())
    assert term.pane("alternate_on") == "1"  # full-screen app on the alternate screen

    term.keys("say hi", "Enter")
    term.wait_for(lambda: "Hello from kimicode." in term.screen())
    assert "❯ say hi" in term.screen()

    term.keys("run something", "Enter")
    term.wait_for(lambda: (repo / "pid").exists() and "started" in term.screen())
    pid = int((repo / "pid").read_text())
    term.keys("Escape")
    term.wait_for(lambda: "interrupted" in term.screen())
    assert gone(pid)

    term.keys("C-c")
    term.wait_for(lambda: "again to quit" in term.screen())
    term.keys("C-c")
    term.wait_for(lambda: "kimicode-exit=" in term.screen())
    assert "kimicode-exit=0" in term.screen()
    # The terminal is as it was: normal screen, cursor shown, no mouse reporting, keys as typed.
    assert term.pane("alternate_on") == "0" and term.pane("cursor_flag") == "1"
    assert term.pane("mouse_any_flag") == "0" and term.pane("mouse_all_flag") == "0"
    assert term.pane("keypad_flag") == "0" and term.pane("bracketed_paste_flag") in ("0", "")


def test_without_a_terminal_it_points_to_headless_mode(fake_openai, repo):
    done = subprocess.run([sys.executable, "-m", "kimicode"], cwd=repo, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    assert done.returncode == 2
    assert "needs a terminal" in done.stderr and "--task" in done.stderr


def test_sigterm_and_a_closed_terminal_stop_running_commands(tmux_kimicode, fake_openai, repo):
    for signal_name, n in (("TERM", 1), ("HUP", 2)):
        fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": f"echo $$ > pid{n}; echo started; sleep 60"})]))
        term = tmux_kimicode("--yolo")
        term.wait_for(lambda: "shift+tab mode" in term.screen())
        term.keys("go", "Enter")
        term.wait_for(lambda: (repo / f"pid{n}").exists() and "started" in term.screen())
        command_pid = int((repo / f"pid{n}").read_text())
        shell_pid = term.pane("pane_pid")
        app_pid = subprocess.run(["pgrep", "-P", shell_pid], capture_output=True, text=True).stdout.split()[0]
        subprocess.run(["kill", f"-{signal_name}", app_pid], check=True)
        term.wait_for(lambda: "kimicode-exit=" in term.screen())
        assert gone(command_pid), f"SIG{signal_name} left the command running"
        assert term.pane("alternate_on") == "0"
