"""The session transcript: append-only JSONL, one record per line, flushed per record.

A torn last line (a process killed mid-write) is the only damage a crash can do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from kimicode.config import data_dir

log = logging.getLogger(__name__)


def new_session_id() -> str:
    # Sortable by creation time, unique without coordination.
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


class SessionLog:
    def __init__(self, session_id: str, path: Path):
        self.id = session_id
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    @classmethod
    def create(cls, **meta: Any) -> SessionLog:
        session_id = new_session_id()
        log = cls(session_id, data_dir() / "sessions" / f"{session_id}.jsonl")
        log.append("meta", id=session_id, created=time.time(), **meta)
        return log

    def append(self, record_type: str, **fields: Any) -> None:
        """Write one record. Never raises: a full disk must not stop the agent mid-turn."""
        if self._file.closed:
            return
        try:
            # ensure_ascii: lone surrogates (from argv or a model) survive as escapes.
            self._file.write(json.dumps({"type": record_type, **fields}, ensure_ascii=True) + "\n")
            self._file.flush()
        except (OSError, ValueError) as exc:
            log.warning("the session log %s stopped recording: %s", self.path, exc)
            with contextlib.suppress(OSError):
                self._file.close()

    def close(self) -> None:
        self._file.close()
