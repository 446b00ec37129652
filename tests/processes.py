"""Process checks shared by tests that kill commands."""

import os
import time


def running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may reap orphans late)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def gone(pid: int) -> bool:
    """Signals are delivered asynchronously: give a killed process a moment to die."""
    deadline = time.monotonic() + 1
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not running(pid)
