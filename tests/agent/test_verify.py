"""The test loop: after an edit the project's real tests run, failures go back to the model."""

import json
import os
import subprocess
import sys

import pytest

from kimicode.agent.loop import MAX_VERIFY_ROUNDS, Agent, Limits
from kimicode.agent.testing import detect_test_command
from kimicode.agent.verify import Verifier
from kimicode.approval import ApprovalPolicy
from kimicode.backends.base import ModelInfo
from kimicode.backends.openai_compat import OpenAICompatBackend, RetryPolicy
from kimicode.events import Approval, ApprovalRequested, Decision, ToolCallFinished, ToolCallStarted
from kimicode.tools.base import ToolContext, ToolRegistry
from kimicode.tools.registry import builtin_tools
from kimicode.workspace import Workspace
from tests.agent.test_loop import assert_history_valid, run
from tests.fakes.openai_server import Reply, ToolCall

PYTEST = f"{sys.executable} -m pytest -q -p no:cacheprovider"


@pytest.fixture
def project(tmp_path):
    (tmp_path / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_calc.py").write_text("from calc import add\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    (tmp_path / "tests" / "test_other.py").write_text("def test_other():\n    assert True\n")
    (tmp_path / "conftest.py").write_text("")
    return tmp_path


def make_agent(server, root, mode="auto"):
    backend = OpenAICompatBackend(base_url=server.base_url, api_key="k", info=ModelInfo("k2"),
                                  retry=RetryPolicy(2, 0.01, 0.05))
    return Agent(backend, ToolRegistry(builtin_tools()), ApprovalPolicy(mode, root), ToolContext(Workspace(root)),
                 "system", Limits(max_steps=30), verifier=Verifier(detect_test_command(root, PYTEST)))


def edit(old, new):
    return ToolCall("edit_file", {"path": "calc.py", "old_string": old, "new_string": new})


READ = ToolCall("read_file", {"path": "calc.py"})


def runs_of_tests(events):
    return [e for e in events if isinstance(e, ToolCallStarted) and e.tool == "run_tests"]


async def test_a_failing_test_the_task_is_about_is_shown_until_fixed(fake_openai, project):
    # test_add fails before any change (add subtracts): the task is to fix it.
    fake_openai.script(
        Reply(tool_calls=[READ]),
        Reply(tool_calls=[edit("a - b", "a * b")]),
        Reply(text="Fixed add."),  # wrong: 2 * 3 != 5, but test_add was failing already
        Reply(tool_calls=[edit("a * b", "a + b")]),
        Reply(text="Now really fixed."),
    )
    agent = make_agent(fake_openai, project)
    events = await run(agent, "fix add")
    assert events[-1].result == "Now really fixed."
    note = fake_openai.requests[3]["messages"][-1]
    assert note["role"] == "user" and "already failing before them" in note["content"]
    assert "test_add" in note["content"] and "assert 6 == 5" in note["content"]
    titles = [e.title for e in runs_of_tests(events)]
    assert titles[0] == f"Run tests before changing anything (baseline): {PYTEST}"
    assert titles[1].startswith("Run relevant tests:") and "tests/test_calc.py" in titles[1]
    assert titles[-1] == f"Run tests: {PYTEST}"  # the full suite before declaring done
    assert agent.verifier.last.outcome.passed and agent.verifier.last.outcome.counts["passed"] == 2
    assert_history_valid(agent.messages)


async def test_new_failures_go_back_until_they_pass(fake_openai, project):
    (project / "calc.py").write_text("def add(a, b):\n    return a + b\n")  # green before the task
    fake_openai.script(
        Reply(tool_calls=[READ]),
        Reply(tool_calls=[edit("a + b", "b + a + 1")]),
        Reply(text="Refactored."),
        Reply(tool_calls=[edit("b + a + 1", "b + a")]),
        Reply(text="Refactored, tests pass."),
    )
    agent = make_agent(fake_openai, project)
    events = await run(agent, "make add commutative-looking")
    assert events[-1].result == "Refactored, tests pass."
    feedback = fake_openai.requests[3]["messages"][-1]["content"]
    assert "kimicode ran the tests" in feedback and "test_add" in feedback and "already failing" not in feedback


async def test_only_preexisting_failures_do_not_loop(fake_openai, project):
    (project / "tests" / "test_other.py").write_text("def test_other():\n    assert False, 'broken before'\n")
    (project / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    fake_openai.script(Reply(tool_calls=[READ]), Reply(tool_calls=[edit("a + b", "b + a")]),
                       Reply(text="done"), Reply(text="test_other is unrelated; done"))
    agent = make_agent(fake_openai, project)
    events = await run(agent, "tidy add")
    assert events[-1].stop_reason == "end_turn" and events[-1].result == "test_other is unrelated; done"
    assert len(fake_openai.requests) == 4  # one note about test_other, no fix rounds
    assert agent.verifier.last.new_failures == [] and agent.verifier.last.already_failing


async def test_nothing_changed_nothing_run(fake_openai, project):
    fake_openai.script(Reply(tool_calls=[READ]), Reply(text="add subtracts; that is the bug."))
    events = await run(make_agent(fake_openai, project), "explain")
    assert runs_of_tests(events) == []


async def test_a_suite_the_model_already_ran_green_is_not_rerun(fake_openai, project):
    fake_openai.script(Reply(tool_calls=[READ]), Reply(tool_calls=[edit("a - b", "a + b")]),
                       Reply(tool_calls=[ToolCall("shell", {"command": PYTEST})]), Reply(text="done, tests pass"))
    events = await run(make_agent(fake_openai, project), "fix add")
    assert [e.title for e in runs_of_tests(events)] == [f"Run tests before changing anything (baseline): {PYTEST}"]


async def test_shell_side_effects_trigger_verification(fake_openai, project):
    fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": "sed -i 's/a - b/a + b/' calc.py"})]),
                       Reply(text="patched with sed"))
    events = await run(make_agent(fake_openai, project), "fix add")
    titles = [e.title for e in runs_of_tests(events)]
    assert titles == [f"Run tests before changing anything (baseline): {PYTEST}", f"Run tests: {PYTEST}"]
    finished = [e for e in events if isinstance(e, ToolCallFinished) and e.tool == "run_tests"]
    assert finished[0].is_error and not finished[1].is_error  # test_add failed before, passes after


async def test_tests_still_broken_after_the_round_limit_end_the_turn_as_failed(fake_openai, project):
    (project / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    fake_openai.script(Reply(tool_calls=[READ]), Reply(tool_calls=[edit("a + b", "a * b")]))
    fake_openai.responder = lambda body: Reply(text="I think it is fine.")
    agent = make_agent(fake_openai, project)
    events = await run(agent, "fix add")
    assert events[-1].stop_reason == "tests_failed"
    assert events[-1].result.startswith("I think it is fine.") and "test_add" in events[-1].result
    assert len(runs_of_tests(events)) == 1 + MAX_VERIFY_ROUNDS + 1  # the baseline, then each round
    assert not agent.verifier.last.ok


async def test_test_runs_need_approval_like_any_command(fake_openai, project):
    fake_openai.script(Reply(tool_calls=[READ]), Reply(tool_calls=[edit("a - b", "a + b")]), Reply(text="done"))
    asked = []

    def answer(event: ApprovalRequested):
        if event.tool == "shell":
            asked.append(event)
            return Approval(Decision.DENY)
        return Approval(Decision.ALLOW_ONCE)

    events = await run(make_agent(fake_openai, project, mode="ask"), "fix add", answer=answer)
    assert len(asked) == 2 and events[-1].result == "done"  # baseline and check both asked, both refused
    assert not [e for e in events if isinstance(e, ToolCallFinished) and e.tool == "run_tests" and not e.is_error]


def test_headless_result_reports_the_tests(fake_openai, project):
    (project / "calc.py").write_text("def add(a, b):\n    return a - b + 0\n")
    fake_openai.script(Reply(tool_calls=[READ]), Reply(tool_calls=[edit("a - b + 0", "a + b")]), Reply(text="fixed"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIMICODE_")}
    env |= {"KIMICODE_PROVIDER": "custom", "KIMICODE_BASE_URL": fake_openai.base_url, "KIMICODE_MODEL": "k2"}
    proc = subprocess.run([sys.executable, "-m", "kimicode", "--task", "fix add", "-o", "json", "--test-cmd", PYTEST],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    tests = json.loads(proc.stdout)["tests"]
    assert tests["passed"] and tests["command"] == PYTEST and tests["counts"]["passed"] == 2
