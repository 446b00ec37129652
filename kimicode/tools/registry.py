"""The built-in tools, in the order the model sees them."""

from __future__ import annotations

from typing import Any

from kimicode.tools.base import Tool
from kimicode.tools.files import EditFile, MultiEdit, ReadFile, WriteFile
from kimicode.tools.search import Glob, Grep, ListDir
from kimicode.tools.shell import Shell


def builtin_tools() -> list[Tool[Any]]:
    return [ReadFile(), WriteFile(), EditFile(), MultiEdit(), Glob(), Grep(), ListDir(), Shell()]
