"""Completion candidates: token detection, path ranking and slash-command matching."""

from __future__ import annotations

from kimicode.tui.commands import SLASH_COMMANDS
from kimicode.tui.completion import (
    at_token,
    command_label,
    list_workspace_files,
    match_commands,
    rank_paths,
    slash_query,
)


def test_at_token_only_after_whitespace_or_at_line_start():
    assert at_token("see @src/ma") == (5, "src/ma")
    assert at_token("@") == (1, "")
    assert at_token("mail user@host") is None
    assert at_token("see @src/main.py and") is None  # the token already ended
    assert at_token("tab\t@x") == (5, "x")


def test_slash_query_needs_the_whole_input_to_be_one_command_word():
    assert slash_query("/mo") == "mo"
    assert slash_query("/") == ""
    assert slash_query("/model kimi") is None
    assert slash_query("/etc/hosts") is None
    assert slash_query("say /mo") is None
    assert slash_query("/mo\nmore") is None


def test_rank_paths_tiers_basename_prefix_then_substring_then_subsequence():
    paths = ["lib/remain.py", "src/main.py", "docs/m_a_i_n.md", "deep/nested/folder/main.py", "other.txt"]

    ranked = rank_paths("main", paths, limit=10)

    # basename prefix (shorter first), then substring, then subsequence; no match left out
    assert ranked == ["src/main.py", "deep/nested/folder/main.py", "lib/remain.py", "docs/m_a_i_n.md"]


def test_rank_paths_path_prefix_counts_as_prefix_and_is_case_insensitive():
    ranked = rank_paths("SRC/M", ["tests/src/m.py", "src/models/x.py"], limit=10)
    assert ranked == ["src/models/x.py", "tests/src/m.py"]


def test_rank_paths_limit_and_empty_query():
    paths = [f"f{i:03}.py" for i in range(50)] + ["a.py"]
    assert rank_paths("", paths, limit=3) == ["a.py", "f000.py", "f001.py"]
    assert len(rank_paths("f", paths, limit=10)) == 10


def test_match_commands_prefix_exact_name_first():
    assert [c.name for c in match_commands("mo")] == ["model", "mode"]
    assert [c.name for c in match_commands("/mode")] == ["mode", "model"]
    assert [c.name for c in match_commands("")] == [c.name for c in SLASH_COMMANDS]
    assert match_commands("nope") == []


def test_command_label_shows_usage_and_help():
    model = match_commands("model")[0]
    assert command_label(model) == "/model [NAME] — Show the model, or switch to NAME"
    assert command_label(match_commands("help")[0]) == "/help — Show commands and keys"


def test_list_workspace_files_is_gitignore_aware_relative_and_capped(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("")
    (tmp_path / "notes.md").write_text("")
    (tmp_path / "secret.env").write_text("")
    (tmp_path / ".gitignore").write_text("*.env\n")

    files = list_workspace_files(tmp_path)

    assert files == [".gitignore", "notes.md", "src/main.py"]
    assert list_workspace_files(tmp_path, limit=2) == [".gitignore", "notes.md"]
    assert list_workspace_files(tmp_path / "missing") == []
