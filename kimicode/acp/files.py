"""File contents through the editor (ACP `fs/read_text_file`, `fs/write_text_file`), when it
offers them: the agent reads unsaved buffers, and the editor applies the agent's edits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kimicode.tools.file_access import LocalFiles


class EditorFiles(LocalFiles):
    def __init__(self, conn: Any, session_id: str, *, read: bool, write: bool) -> None:
        self.conn = conn
        self.session_id = session_id
        self.read = read
        self.write = write

    async def read_bytes(self, path: Path) -> bytes:
        if not self.read:
            return await super().read_bytes(path)
        try:
            response = await self.conn.read_text_file(session_id=self.session_id, path=str(path))
        except Exception as exc:  # a JSON-RPC error from the editor: a result the model can read
            raise OSError(f"the editor could not read it: {exc}") from None
        return response.content.encode("utf-8")

    async def write_bytes(self, path: Path, data: bytes) -> None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None  # the editor's API is text only
        if not self.write or text is None:
            return await super().write_bytes(path, data)
        try:
            await self.conn.write_text_file(session_id=self.session_id, path=str(path), content=text)
        except Exception as exc:
            raise OSError(f"the editor could not write it: {exc}") from None
