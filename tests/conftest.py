"""Shared fixtures: an isolated home for every test and the fake OpenAI server."""

from __future__ import annotations

import os

# Triton kernels run in Triton's interpreter on the CPU unless a GPU run asks for the real
# thing (KIMICODE_GPU_TESTS=1). It must be decided before any kernel module is imported.
if os.environ.get("KIMICODE_GPU_TESTS") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from tests.fakes.fixtures import fake_openai  # noqa: F401  (fixture)

_LEAKY_ENV = ("KIMICODE_", "MOONSHOT_", "OPENROUTER_", "OPENAI_")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the real user config, data dir or API keys."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    for name in list(os.environ):
        if name.startswith(_LEAKY_ENV):
            monkeypatch.delenv(name)
    return home
