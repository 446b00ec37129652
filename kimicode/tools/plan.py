"""The plan tool: the model keeps a visible todo list that front ends show live."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kimicode.events import PlanItem, PlanUpdated
from kimicode.tools.base import Params, Tool, ToolContext, ToolError, ToolResult


class PlanStep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: str = Field(description="What to do, in a few words.", min_length=1)
    status: Literal["pending", "in_progress", "done"] = Field(description="Where this step stands.")


class UpdatePlanParams(Params):
    items: list[PlanStep] = Field(description="The whole plan, in order; replaces the previous one.")


class UpdatePlan(Tool[UpdatePlanParams]):
    """Record your plan for the task as a short todo list the user can follow.

    Use it for tasks with several steps: write the plan first, then send the whole
    list again each time a step starts or is done. At most one step may be
    in_progress. Skip it for one-step tasks.
    """

    name = "update_plan"
    kind = "think"
    Params = UpdatePlanParams

    def title(self, params: UpdatePlanParams) -> str:
        done = sum(item.status == "done" for item in params.items)
        return f"Plan: {done}/{len(params.items)} done"

    async def run(self, params: UpdatePlanParams, ctx: ToolContext) -> ToolResult:
        if sum(item.status == "in_progress" for item in params.items) > 1:
            raise ToolError("at most one step may be in_progress; mark the others pending or done")
        items = tuple(PlanItem(item.step, item.status) for item in params.items)
        ctx.emit(PlanUpdated(items))
        done = sum(item.status == "done" for item in items)
        return ToolResult(f"Plan updated: {done} of {len(items)} steps done.")
