"""Fixtures for driving the TUI with Textual's Pilot against the fake OpenAI server."""

from __future__ import annotations

import subprocess

import pytest

from kimicode.tui.app import KimicodeApp
from kimicode.tui.history import PromptHistory


@pytest.fixture
def repo(tmp_path):
    """A git repository on branch main with one committed file."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "app.py").write_text("VALUE = 1\n")
    (root / ".kimicode").mkdir()
    (root / ".kimicode" / "config.toml").write_text("auto_test = false\n[retry]\nmax_attempts = 2\nbase_delay = 0.01\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], cwd=root, check=True)
    return root


@pytest.fixture
def make_app(fake_openai, repo, tmp_path):
    """make_app(**flags) -> a KimicodeApp on `repo` talking to the fake server."""

    def make(resume: str | None = None, **flags) -> KimicodeApp:
        settings = {"provider": "custom", "base_url": fake_openai.base_url, "model": "kimi-k2-0905-preview",
                    "repo_map": False} | flags
        return KimicodeApp(repo, settings, resume, history=PromptHistory(tmp_path / "history.jsonl"))

    return make
