"""What a tool is: typed parameters, a model-facing docstring, a kind, and `run`.

A failing tool returns an error *result* the model can read; raising `ToolError`
anywhere inside `run` is the short way to produce one.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from kimicode.events import Event, ToolKind
from kimicode.tools.file_access import LocalFiles
from kimicode.workspace import PathError, Workspace

log = logging.getLogger(__name__)


class ToolError(Exception):
    """Raised inside a tool; becomes an error result for the model."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    output: str
    is_error: bool = False
    display: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FileStamp:
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: Path) -> FileStamp:
        st = path.stat()
        return cls(st.st_mtime_ns, st.st_size)


@dataclass(slots=True)
class ToolContext:
    """What a running tool may use. One per agent; `call_id` is set per call."""

    workspace: Workspace
    emit: Callable[[Event], None] = lambda event: None
    call_id: str = ""
    shell_timeout: float = 120.0
    index: Any = None  # a kimicode.index.indexer.RepoIndex, when the symbol tools are on
    # Files the agent has seen, with their stamp then: overwriting a file the agent
    # never read, or that changed on disk since, is refused so user edits survive.
    seen_files: dict[Path, FileStamp] = field(default_factory=dict)
    files: LocalFiles = field(default_factory=LocalFiles)  # where file contents are read and written
    terminal: Any = None  # runs shell commands elsewhere (an editor's terminal): run(...) -> TerminalRun
    changed_files: set[Path] = field(default_factory=set)

    def note_seen(self, path: Path) -> None:
        self.seen_files[path] = FileStamp.of(path)

    def note_written(self, path: Path) -> None:
        self.changed_files.add(path)
        self.note_seen(path)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


P = TypeVar("P", bound=Params)


class Tool(Generic[P]):
    """Subclasses set `name`, `kind`, `Params` and a docstring (the model reads it)."""

    name: ClassVar[str]
    kind: ClassVar[ToolKind]
    Params: ClassVar[type[Params]]

    @classmethod
    def description(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def schema(cls) -> dict[str, Any]:
        """The OpenAI `tools` entry for this tool."""
        return {
            "type": "function",
            "function": {
                "name": cls.name,
                "description": cls.description(),
                "parameters": _clean_schema(cls.Params.model_json_schema()),
            },
        }

    def parse(self, arguments: dict[str, Any]) -> P:
        """Validated parameters, or a ToolError listing what is wrong."""
        try:
            return self.Params.model_validate(arguments)  # type: ignore[return-value]
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}" for err in exc.errors()
            )
            raise ToolError(f"invalid arguments for {self.name}: {problems}") from None

    def title(self, params: P) -> str:
        """One line for humans, e.g. "Read src/app.py"."""
        return self.name

    async def run(self, params: P, ctx: ToolContext) -> ToolResult:
        raise NotImplementedError

    async def execute(self, params: P, ctx: ToolContext) -> ToolResult:
        """`run`, with every failure turned into an error result the model can act on."""
        try:
            return await self.run(params, ctx)
        except (ToolError, PathError) as exc:
            return ToolResult(str(exc), is_error=True)
        except Exception as exc:  # a bug or an OS error must not end the turn
            log.exception("tool %s failed", self.name)
            return ToolResult(f"{self.name} failed unexpectedly: {type(exc).__name__}: {exc}", is_error=True)

    async def __call__(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        try:
            params = self.parse(arguments)
        except ToolError as exc:
            return ToolResult(str(exc), is_error=True)
        return await self.execute(params, ctx)


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline `$defs` and drop pydantic's `title` noise: a flat schema with names,
    types and descriptions is what K2 and OpenAI-compatible servers handle best."""
    definitions = schema.get("$defs", {})

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return strip(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {
                k: strip(v)
                for k, v in node.items()
                if k != "$defs" and not (k == "title" and isinstance(v, str))
            }
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(schema)


class ToolRegistry:
    def __init__(self, tools: list[Tool[Any]]):
        self._tools = {tool.name: tool for tool in tools}
        self._schemas = [tool.schema() for tool in tools]  # built once: pydantic's schema walk is slow

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def get(self, name: str) -> Tool[Any] | None:
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        return self._schemas
