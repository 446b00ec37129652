"""Pytest fixtures for the fake OpenAI server (imported by tests/conftest.py)."""

from collections.abc import Iterator

import pytest

from tests.fakes.openai_server import FakeOpenAIServer


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """A running FakeOpenAIServer, closed after the test."""
    with FakeOpenAIServer() as server:
        yield server
