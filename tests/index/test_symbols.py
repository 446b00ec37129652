"""The symbol tools, the index CLI and the repo map in the agent's prompt, on a real small repo."""

import os
import subprocess
import sys

import pytest

from kimicode.index.indexer import RepoIndex
from kimicode.tools.base import ToolContext
from kimicode.tools.symbols import FindReferences, FindSymbol, RepoMap
from kimicode.workspace import Workspace
from tests.fakes.openai_server import Reply, ToolCall

ENGINE = '''class Engine:
    """The core."""

    def run(self, job):
        return job.execute()


def make_engine():
    return Engine()
'''


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "engine.py").write_text(ENGINE)
    for i in range(4):
        (tmp_path / f"plugin{i}.py").write_text(
            f"from core.engine import Engine, make_engine\n\n\ndef plugin_{i}():\n    engine = make_engine()\n"
            f"    engine.run(None)\n    return Engine\n")
    (tmp_path / "web.ts").write_text("export interface Job { id: number }\nexport function schedule(job: Job): void {}\n")
    return tmp_path


@pytest.fixture
def ctx(repo):
    workspace = Workspace(repo)
    return ToolContext(workspace, index=RepoIndex(workspace))


async def test_find_symbol_exact_and_fuzzy(ctx):
    exact = await FindSymbol()({"name": "Engine"}, ctx)
    assert exact.output.splitlines() == ["core/engine.py:1: class Engine:"]
    fuzzy = await FindSymbol()({"name": "engine", "fuzzy": True}, ctx)
    assert "core/engine.py:1:" in fuzzy.output and "core/engine.py:8:" in fuzzy.output  # Engine, make_engine
    missing = await FindSymbol()({"name": "Nope"}, ctx)
    assert "no definition of 'Nope'" in missing.output and "fuzzy" in missing.output
    method = await FindSymbol()({"name": "run"}, ctx)
    assert "core/engine.py:4:" in method.output and "(in Engine)" in method.output


async def test_find_references_show_the_lines(ctx):
    result = await FindReferences()({"name": "make_engine"}, ctx)
    lines = result.output.splitlines()
    assert len(lines) == 4 and all("engine = make_engine()" in line for line in lines)
    assert lines[0].startswith("plugin0.py:5:")


async def test_repo_map_puts_the_central_class_first_and_follows_edits(ctx, repo):
    text = (await RepoMap()({}, ctx)).output
    assert text.startswith("core/engine.py:") and "class Engine:" in text and "web.ts:" in text
    (repo / "core" / "engine.py").write_text(ENGINE + "\n\ndef brand_new():\n    pass\n")
    found = await FindSymbol()({"name": "brand_new"}, ctx)
    assert "core/engine.py:12:" in found.output  # the index caught up by itself


def cli(repo, *args):
    return subprocess.run([sys.executable, "-m", "kimicode", *args], cwd=repo, capture_output=True, text=True,
                          timeout=120)


def test_index_map_and_symbols_commands(repo):
    first = cli(repo, "index")
    assert first.returncode == 0, first.stderr
    assert "6 files (6 parsed" in first.stdout and "python 5" in first.stdout and "typescript 1" in first.stdout
    again = cli(repo, "index")
    assert "(0 parsed" in again.stdout
    mapped = cli(repo, "map", "--tokens", "200", "--focus", "web.ts")
    assert mapped.returncode == 0 and "web.ts:" in mapped.stdout
    found = cli(repo, "symbols", "schedule")
    assert found.returncode == 0 and found.stdout.startswith("web.ts:2:")
    assert cli(repo, "symbols", "Missing").returncode == 1
    assert (repo / ".kimicode" / "cache").is_dir()


def test_the_agent_prompt_carries_the_map_and_refreshes_it_when_files_change(fake_openai, repo):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIMICODE_")}
    env |= {"KIMICODE_PROVIDER": "custom", "KIMICODE_BASE_URL": fake_openai.base_url, "KIMICODE_MODEL": "k2"}
    fake_openai.script(Reply(tool_calls=[ToolCall("find_symbol", {"name": "Engine"})]), Reply(text="found"))
    run = subprocess.run([sys.executable, "-m", "kimicode", "--task", "where is Engine"], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    system = fake_openai.requests[0]["messages"][0]["content"]
    assert "# Repository map" in system and "core/engine.py:" in system
    assert "core/engine.py:1: class Engine:" in fake_openai.requests[1]["messages"][-1]["content"]
    assert {t["function"]["name"] for t in fake_openai.requests[0]["tools"]} >= {"find_symbol", "find_references", "repo_map"}
    (repo / "core" / "engine.py").write_text(ENGINE + "\n\nclass Scheduler:\n    pass\n")
    fake_openai.script(Reply(text="ok"))
    subprocess.run([sys.executable, "-m", "kimicode", "--continue", "--task", "again"], cwd=repo, env=env,
                   check=True, capture_output=True, timeout=120)
    assert "class Scheduler:" in fake_openai.requests[-1]["messages"][0]["content"]


async def test_the_prompt_map_follows_updates_made_by_tools(ctx, repo):
    from kimicode.agent.setup import RepoMapSection

    section = RepoMapSection(ctx.index, 2_000)
    assert "gamma_new_function" not in section.text()
    (repo / "c.py").write_text("def gamma_new_function():\n    return Engine()\n")
    await FindSymbol()({"name": "gamma_new_function"}, ctx)  # the tool brings the index up to date first
    assert "gamma_new_function" in section.text()


def test_an_unusable_cache_folder_does_not_stop_the_agent(fake_openai, repo):
    (repo / ".kimicode").mkdir()
    (repo / ".kimicode" / "cache").write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIMICODE_")}
    env |= {"KIMICODE_PROVIDER": "custom", "KIMICODE_BASE_URL": fake_openai.base_url, "KIMICODE_MODEL": "k2"}
    fake_openai.script(Reply(text="still fine"))
    run = subprocess.run([sys.executable, "-m", "kimicode", "--task", "hi"], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout == "still fine\n" and "no repository index" in run.stderr
