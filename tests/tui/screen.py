"""Reading what a running app shows, for assertions."""

from __future__ import annotations

from textual.app import App


def screen_text(app: App) -> str:
    """The active screen as plain text, one line per row (what a user would read)."""
    # render_strips draws without touching the app's own repaint bookkeeping.
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text.rstrip() for strip in strips)


async def wait_for(pilot, condition, timeout: float = 10.0, step: float = 0.05) -> None:
    """Let the app run until `condition()` holds; fail with the screen shown if it never does."""
    waited = 0.0
    while not condition():
        if waited >= timeout:
            raise AssertionError(f"condition not met in {timeout} s; screen:\n{screen_text(pilot.app)}")
        await pilot.pause(step)
        waited += step


async def type_text(pilot, text: str) -> None:
    """Type into the focused widget like a user (each character a key press)."""
    for char in text:
        await pilot.press({" ": "space", "@": "at", "/": "slash", "\\": "backslash"}.get(char, char))
