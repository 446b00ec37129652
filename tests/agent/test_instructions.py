"""Nested AGENTS.md files: shown once per folder, outermost first, again after a compaction."""

from kimicode.agent.instructions import ProjectInstructions
from kimicode.workspace import Workspace


def test_nested_instructions_are_shown_once_outermost_first_and_again_after_forget(tmp_path):
    (tmp_path / "AGENTS.md").write_text("root rules")
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "AGENTS.md").write_text("rules for a")
    (tmp_path / "a" / "b" / "AGENTS.md").write_text("rules for b")
    (tmp_path / "a" / "b" / "x.py").write_text("")
    instructions = ProjectInstructions(Workspace(tmp_path))
    assert "root rules" in instructions.root()
    first = instructions.for_path("a/b/x.py")
    assert first.index("rules for a") < first.index("rules for b") and "root rules" not in first
    assert instructions.for_path("a/b/x.py") == "" and instructions.for_path("a") == ""
    instructions.forget()
    assert "rules for b" in instructions.for_path("a/b")


def test_paths_outside_or_missing_give_nothing(tmp_path):
    instructions = ProjectInstructions(Workspace(tmp_path))
    assert instructions.root() == ""
    assert instructions.for_path("../elsewhere") == "" and instructions.for_path("no/such/file.py") == ""
