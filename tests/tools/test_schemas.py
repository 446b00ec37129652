"""Pins what the model sees of each tool: name, description and parameter schema.

A change here changes the model's behaviour, so it should be deliberate: when a
snapshot differs, review the change and update tests/tools/snapshots/<tool>.json
(delete it and rerun to have it written again).
"""

import json
from pathlib import Path

import pytest

from kimicode.tools.plan import UpdatePlan
from kimicode.tools.registry import builtin_tools
from kimicode.tools.symbols import FindReferences, FindSymbol, RepoMap

SNAPSHOTS = Path(__file__).parent / "snapshots"


def test_builtin_tools_in_order():
    assert [tool.name for tool in builtin_tools()] == [
        "read_file",
        "write_file",
        "edit_file",
        "multi_edit",
        "glob",
        "grep",
        "list_dir",
        "shell",
    ]


ALL_TOOLS = [*builtin_tools(), FindSymbol(), FindReferences(), RepoMap(), UpdatePlan()]


@pytest.mark.parametrize("tool", ALL_TOOLS, ids=lambda tool: tool.name)
def test_schema_matches_snapshot(tool):
    snapshot = SNAPSHOTS / f"{tool.name}.json"
    current = json.dumps(tool.schema(), indent=2, ensure_ascii=False) + "\n"
    if not snapshot.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        snapshot.write_text(current)
        pytest.fail(f"created snapshot {snapshot}; review it and rerun")
    assert current == snapshot.read_text(), f"{tool.name}'s schema changed; update {snapshot} if intended"


ALL_TOOLS = [*builtin_tools(), FindSymbol(), FindReferences(), RepoMap(), UpdatePlan()]


@pytest.mark.parametrize("tool", ALL_TOOLS, ids=lambda tool: tool.name)
def test_every_parameter_is_described(tool):
    def check(properties):
        for name, spec in properties.items():
            assert spec.get("description"), f"{tool.name}.{name} has no description"

    parameters = tool.schema()["function"]["parameters"]
    check(parameters["properties"])
    for definition in parameters.get("$defs", {}).values():
        check(definition["properties"])
    assert tool.description(), f"{tool.name} has no docstring"
