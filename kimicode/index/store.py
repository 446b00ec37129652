"""The persistent symbol store: one SQLite file holding every file's stamp and tags.

The database is a cache: when it is unreadable, corrupt or from another schema
version it is deleted and rebuilt, never reported to the caller as an error.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kimicode.index.model import FileTags, Tag

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE files(path TEXT PRIMARY KEY, mtime_ns INT, size INT, digest TEXT, language TEXT);
CREATE TABLE tags(path TEXT, kind TEXT, name TEXT, category TEXT, line INT, end_line INT, signature TEXT, scope TEXT);
"""
_INDEXES = """
CREATE INDEX tags_name_kind ON tags(name, kind);
CREATE INDEX tags_path ON tags(path);
"""

_TAG_COLUMNS = "kind, name, category, line, end_line, signature, scope"


class IndexStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._bulk = False  # inside a bulk-load transaction (see `transaction`)
        # Opening may create or rebuild the database: one process at a time, so two kimicode
        # runs starting together neither race on the schema nor delete each other's files.
        with open(f"{self.path}.lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                self._conn = self._open()
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise  # in use by another process, not damaged: never delete it
                self._delete_files()
                self._conn = self._open()
            except sqlite3.DatabaseError:  # corrupt: rebuild
                self._delete_files()
                self._conn = self._open()

    # -- opening -------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            version = _schema_version(conn)
        except sqlite3.DatabaseError:
            conn.close()
            raise
        if version == SCHEMA_VERSION:
            return conn
        conn.close()
        self._delete_files()
        conn = self._connect()
        version_row = f"INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');"
        conn.executescript(f"BEGIN; {_SCHEMA} {_INDEXES} {version_row} COMMIT;")
        return conn

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are explicit (see `transaction`) so that a whole
        # update lands at once. check_same_thread=False lets the agent update the index
        # in a worker thread and query it from elsewhere; calls must not overlap.
        # timeout: another kimicode process may be writing the same cache; wait for it.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _delete_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        self._conn.close()

    # -- writing -------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one transaction; nested uses join the outer one.

        Into an empty store (a cold index) the tags load in bulk: the tag indexes are
        dropped and built once at the end, which is much faster than row by row."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN")
        self._bulk = self._conn.execute("SELECT 1 FROM files LIMIT 1").fetchone() is None
        if self._bulk:
            self._conn.execute("DROP INDEX tags_name_kind")
            self._conn.execute("DROP INDEX tags_path")
        try:
            yield
            if self._bulk:
                for statement in filter(str.strip, _INDEXES.split(";")):
                    self._conn.execute(statement)
        except BaseException:
            self._conn.execute("ROLLBACK")  # DDL is transactional: the indexes come back too
            raise
        finally:
            self._bulk = False
        self._conn.execute("COMMIT")

    def replace_file(self, file_tags: FileTags, mtime_ns: int, size: int, digest: str) -> None:
        with self.transaction():
            if not self._bulk:  # in bulk there is nothing to delete, and no index to find it by
                self._conn.execute("DELETE FROM tags WHERE path = ?", (file_tags.path,))
            self._conn.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                (file_tags.path, mtime_ns, size, digest, file_tags.language),
            )
            self._conn.executemany(
                f"INSERT INTO tags(path, {_TAG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(file_tags.path, *_tag_row(tag)) for tag in file_tags.tags],
            )

    def update_stamp(self, path: str, mtime_ns: int, size: int) -> None:
        """A file touched without a content change: keep its tags, record the new stamp."""
        self._conn.execute("UPDATE files SET mtime_ns = ?, size = ? WHERE path = ?", (mtime_ns, size, path))

    def remove_files(self, paths: Iterable[str]) -> None:
        rows = [(path,) for path in paths]
        with self.transaction():
            self._conn.executemany("DELETE FROM tags WHERE path = ?", rows)
            self._conn.executemany("DELETE FROM files WHERE path = ?", rows)

    # -- reading -------------------------------------------------------------

    def files(self) -> dict[str, tuple[int, int, str]]:
        """path -> (mtime_ns, size, digest) for every recorded file."""
        rows = self._conn.execute("SELECT path, mtime_ns, size, digest FROM files")
        return {path: (mtime_ns, size, digest) for path, mtime_ns, size, digest in rows}

    def file_tags(self) -> list[FileTags]:
        """Every recorded file with its tags (in extraction order), sorted by path."""
        tags_by_path: dict[str, list[Tag]] = {}
        for path, *row in self._conn.execute(f"SELECT path, {_TAG_COLUMNS} FROM tags ORDER BY rowid"):
            tags_by_path.setdefault(path, []).append(Tag(*row))
        return [
            FileTags(path, language, tuple(tags_by_path.get(path, ())))
            for path, language in self._conn.execute("SELECT path, language FROM files ORDER BY path")
        ]

    def definitions(self, name: str | None = None, *, prefix: bool = False, limit: int = 100) -> list[tuple[str, Tag]]:
        """Definitions named `name` exactly, or starting with it (any case) when `prefix`;
        all definitions when `name` is None."""
        if name is None:
            where, args = "", ()
        elif prefix:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where, args = "AND name LIKE ? ESCAPE '\\'", (escaped + "%",)  # LIKE ignores ASCII case
        else:
            where, args = "AND name = ?", (name,)
        return self._tags(f"kind = 'def' {where}", args, limit)

    def references(self, name: str, limit: int = 500) -> list[tuple[str, Tag]]:
        return self._tags("kind = 'ref' AND name = ?", (name,), limit)

    def _tags(self, where: str, args: tuple, limit: int) -> list[tuple[str, Tag]]:
        rows = self._conn.execute(
            f"SELECT path, {_TAG_COLUMNS} FROM tags WHERE {where} ORDER BY path, line LIMIT ?", (*args, limit)
        )
        return [(path, Tag(*row)) for path, *row in rows]

    def symbol_names(self) -> list[str]:
        """Distinct definition names, sorted (the candidates for fuzzy search)."""
        rows = self._conn.execute("SELECT DISTINCT name FROM tags WHERE kind = 'def' ORDER BY name")
        return [name for (name,) in rows]

    def stats(self) -> dict:
        """{"files": n, "defs": n, "refs": n, "languages": {language: file count}}."""
        counts = dict(self._conn.execute("SELECT kind, COUNT(*) FROM tags GROUP BY kind").fetchall())
        languages = self._conn.execute(
            "SELECT language, COUNT(*) FROM files WHERE language IS NOT NULL GROUP BY language ORDER BY language"
        )
        return {
            "files": self._conn.execute("SELECT COUNT(*) FROM files").fetchone()[0],
            "defs": counts.get("def", 0),
            "refs": counts.get("ref", 0),
            "languages": dict(languages.fetchall()),
        }


def _schema_version(conn: sqlite3.Connection) -> int | None:
    """The stored schema version; None for an empty or foreign database.
    Raises sqlite3.DatabaseError when the file is not a database at all."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row and str(row[0]).isdigit() else None


def _tag_row(tag: Tag) -> tuple:
    return (tag.kind, tag.name, tag.category, tag.line, tag.end_line, tag.signature, tag.scope)
