"""The agent's live todo list, in a side panel."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from kimicode.events import PlanItem

_MARKS = {"done": ("✓", "plan-done"), "in_progress": ("▶", "plan-active"), "pending": ("○", "plan-pending")}


class PlanPanel(VerticalScroll, can_focus=False):
    def compose(self):
        yield Static("Plan", classes="panel-title")
        yield Static(Text("no plan yet", style="italic"), id="plan-items")

    def show(self, items: tuple[PlanItem, ...]) -> None:
        text = Text()
        for item in items:
            mark, _ = _MARKS.get(item.status, ("○", ""))
            style = {"done": "dim strike", "in_progress": "bold", "pending": ""}.get(item.status, "")
            text.append(f"{mark} ", style="bold" if item.status == "in_progress" else "")
            text.append(item.step + "\n", style=style)
        done = sum(item.status == "done" for item in items)
        self.query_one(".panel-title", Static).update(f"Plan {done}/{len(items)}" if items else "Plan")
        text.rstrip()
        self.query_one("#plan-items", Static).update(text if items else Text("no plan yet", style="italic"))
