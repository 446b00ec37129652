"""An MCP server's tool as a kimicode Tool.

MCP tools bring a JSON schema rather than a pydantic Params model, so what the
registry and the agent call on a tool (`schema`, `description`, `parse`, `title`,
`run`) is overridden per instance. Nothing here imports the MCP SDK: results are
read by their fields, which keeps importing kimicode cheap.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from kimicode.tools.base import Tool, ToolContext, ToolError, ToolResult

MAX_NAME = 64  # what OpenAI-compatible APIs accept for a function name
MAX_OUTPUT = 30_000  # characters of one result the model reads
_TITLE_ARGS = 100  # characters of the arguments shown in the one-line title

# (tool name on the server, arguments) -> the server's CallToolResult; raises ToolError.
CallFn = Callable[[str, dict[str, Any]], Awaitable[Any]]


class McpTool(Tool[Any]):
    kind = "other"  # unknown effects: `ask` mode asks, `auto` and `yolo` allow, rules match the name

    def __init__(self, name: str, server: str, spec: Any, call: CallFn):
        self.name = name  # type: ignore[misc]  # a ClassVar on built-in tools
        self.server = server
        self.tool = spec.name  # the name the server knows it by
        self._description = f"[MCP server {server}] {spec.description or spec.title or spec.name}".strip()
        self.parameters = _object_schema(spec.input_schema)
        self._call = call

    def description(self) -> str:  # type: ignore[override]
        return self._description

    def schema(self) -> dict[str, Any]:  # type: ignore[override]
        return {
            "type": "function",
            "function": {"name": self.name, "description": self._description, "parameters": self.parameters},
        }

    def parse(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The arguments themselves, once they are an object with every required key;
        the server checks the rest against its schema."""
        if not isinstance(arguments, dict):
            raise ToolError(f"the arguments for {self.name} must be a JSON object")
        required = self.parameters.get("required")
        missing = [key for key in required if key not in arguments] if isinstance(required, list) else []
        if missing:
            raise ToolError(f"invalid arguments for {self.name}: missing required {', '.join(map(str, missing))}")
        return arguments

    def title(self, params: dict[str, Any]) -> str:
        shown = ", ".join(f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in params.items())
        if len(shown) > _TITLE_ARGS:
            shown = shown[: _TITLE_ARGS - 1] + "…"
        return f"{self.server}: {self.tool}({shown})"

    async def run(self, params: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return render_result(await self._call(self.tool, params))


def render_result(result: Any) -> ToolResult:
    """The text the model reads for a CallToolResult: its text content, other content
    summarised, structured content as JSON when there is no text; capped."""
    parts = [_render_block(block) for block in result.content or []]
    if not any(part.strip() for part in parts) and result.structured_content is not None:
        parts = [json.dumps(result.structured_content, ensure_ascii=False)]
    text = "\n".join(parts) or "(no output)"
    if len(text) > MAX_OUTPUT:
        cut = len(text) - MAX_OUTPUT
        text = f"{text[:MAX_OUTPUT]}\n[output truncated: {cut:,} of {len(text):,} characters cut]"
    return ToolResult(text, is_error=bool(result.is_error))


def _render_block(block: Any) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return block.text
    if kind in ("image", "audio"):
        return f"[{block.mime_type}, {_decoded_size(block.data):,} bytes]"
    if kind == "resource":  # embedded: text is shown, binary summarised
        resource = block.resource
        if getattr(resource, "text", None) is not None:
            return f"[resource {resource.uri}]\n{resource.text}"
        return f"[resource {resource.uri}, {resource.mime_type or 'binary'}, {_decoded_size(resource.blob):,} bytes]"
    if kind == "resource_link":
        return f"[resource link {block.uri}{f' ({block.name})' if block.name else ''}]"
    return f"[{kind or 'unknown'} content]"


def _decoded_size(base64_data: str) -> int:
    return len(base64_data.rstrip("=")) * 3 // 4


def _object_schema(schema: Any) -> dict[str, Any]:
    """The input schema, as the object schema function calling needs."""
    schema = dict(schema) if isinstance(schema, dict) else {}
    schema.setdefault("type", "object")
    if schema["type"] == "object":
        schema.setdefault("properties", {})
    return schema


def tool_name(server: str, tool: str, taken: set[str]) -> str:
    """`server__tool` in the characters function names allow, at most MAX_NAME long and
    not in `taken`. A name that had to be shortened or was taken gets a short hash of
    the original names, so it stays the same from session to session (rules name it)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{server}__{tool}")
    if len(name) <= MAX_NAME and name not in taken:
        return name
    digest = hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()
    for size in range(8, len(digest) + 1):
        candidate = f"{name[: MAX_NAME - size - 1]}_{digest[:size]}"
        if candidate not in taken:
            return candidate
    raise ValueError(f"no free tool name for {server}/{tool}")  # unreachable in practice
