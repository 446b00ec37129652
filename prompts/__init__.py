"""Model-facing text, kept as files (import path `kimicode.prompts`)."""

from __future__ import annotations

from importlib import resources
from string import Template


def render(name: str, **values: str) -> str:
    """The prompt file `name`.md with `${key}` placeholders filled; a missing value is an error."""
    text = resources.files(__name__).joinpath(f"{name}.md").read_text(encoding="utf-8")
    return Template(text).substitute(values)
