"""PromptHistory: JSON Lines persistence that survives torn lines and unwritable files."""

from __future__ import annotations

import json
import os

import pytest

from kimicode.paths import data_dir
from kimicode.tui.history import MAX_ENTRIES, PromptHistory


def test_entries_persist_across_instances_including_multiline(tmp_path):
    path = tmp_path / "history.jsonl"
    first = PromptHistory(path)
    first.add("fix the bug")
    first.add("two\nlines")

    again = PromptHistory(path)

    assert again.entries == ("fix the bug", "two\nlines")
    assert path.read_text().count("\n") == 2  # one JSON string per line


def test_each_add_is_on_disk_immediately(tmp_path):
    path = tmp_path / "history.jsonl"
    history = PromptHistory(path)
    history.add("now")
    # no close/flush call: a crash right after sending must not lose the entry
    assert [json.loads(line) for line in path.read_text().splitlines()] == ["now"]


def test_blank_and_consecutive_duplicates_are_not_stored(tmp_path):
    path = tmp_path / "history.jsonl"
    history = PromptHistory(path)
    for text in ["a", "a", "   ", "", "b", "a"]:
        history.add(text)

    assert history.entries == ("a", "b", "a")
    assert PromptHistory(path).entries == ("a", "b", "a")


def test_torn_and_garbled_lines_are_skipped_and_next_entry_stays_readable(tmp_path):
    path = tmp_path / "history.jsonl"
    # a writer killed mid-line leaves no trailing newline
    path.write_text('"good"\nnot json\n42\n"torn en')

    history = PromptHistory(path)
    assert history.entries == ("good",)

    history.add("after the tear")
    assert PromptHistory(path).entries == ("good", "after the tear")


def test_loading_keeps_only_the_newest_entries(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(f"prompt {i}") + "\n" for i in range(MAX_ENTRIES + 50)))

    history = PromptHistory(path)

    assert len(history) == MAX_ENTRIES
    assert history.entries[0] == "prompt 50"
    assert history.entries[-1] == f"prompt {MAX_ENTRIES + 49}"


def test_an_overgrown_file_is_compacted_on_load(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(f"p{i}") + "\n" for i in range(3 * MAX_ENTRIES)))

    PromptHistory(path)

    lines = path.read_text().splitlines()
    assert len(lines) == MAX_ENTRIES
    assert json.loads(lines[-1]) == f"p{3 * MAX_ENTRIES - 1}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_file_keeps_working_in_memory(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        history = PromptHistory(folder / "history.jsonl")
        history.add("still remembered")
        assert history.entries == ("still remembered",)
    finally:
        folder.chmod(0o700)


def test_a_path_that_cannot_be_a_file_keeps_working_in_memory(tmp_path):
    # works as root too: a directory where the file should be cannot be opened or appended to
    path = tmp_path / "history.jsonl"
    path.mkdir()

    history = PromptHistory(path)
    history.add("one")
    history.add("two")

    assert history.entries == ("one", "two")
    assert path.is_dir()


def test_default_path_is_in_the_data_dir():
    history = PromptHistory()
    history.add("hello")

    expected = data_dir() / "prompt_history.jsonl"
    assert history.path == expected
    assert json.loads(expected.read_text()) == "hello"
    assert expected.stat().st_mode & 0o077 == 0  # prompts may hold pasted secrets
