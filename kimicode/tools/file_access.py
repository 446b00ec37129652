"""How tools read and write file contents: the local disk by default; an editor (ACP
`fs/*`) can stand in, so the agent sees unsaved buffers and the editor sees its edits."""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
from pathlib import Path


class LocalFiles:
    async def read_bytes(self, path: Path) -> bytes:
        return path.read_bytes()

    async def write_bytes(self, path: Path, data: bytes) -> None:
        await asyncio.to_thread(atomic_write, path, data)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never
    half of one; an existing file keeps its mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = None
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # 0o666 lets the umask decide a new file's mode, as for any file the user creates.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
