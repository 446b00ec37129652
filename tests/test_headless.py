"""`kimicode --task` as CI runs it: a real subprocess, no TTY, against the fake server."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import gone
from tests.fakes.openai_server import Fault, Reply, ToolCall


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / ".kimicode").mkdir(parents=True)
    (root / ".kimicode" / "config.toml").write_text("[retry]\nmax_attempts = 2\nbase_delay = 0.01\n")
    (root / "app.py").write_text("VALUE = 1\n")
    return root


def cli_env(server, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIMICODE_", "MOONSHOT_", "OPENROUTER_"))}
    env.update(KIMICODE_PROVIDER="custom", KIMICODE_BASE_URL=server.base_url, KIMICODE_MODEL="kimi-k2-0905-preview")
    env.update(extra)
    return env


def kimicode(server, cwd, *args, stdin=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kimicode", *args],
        cwd=cwd, env=env or cli_env(server), input=stdin, capture_output=True, text=True, timeout=60,
    )


def edit_script():
    return [
        Reply(text="Let me look.", tool_calls=[ToolCall("read_file", {"path": "app.py"})], usage=(1000, 10, 0)),
        Reply(tool_calls=[
            ToolCall("edit_file", {"path": "app.py", "old_string": "VALUE = 1", "new_string": "VALUE = 2"}),
            ToolCall("shell", {"command": "echo generated | tee out.txt && rm -f stale.txt"}),
        ], usage=(1200, 20, 1000)),
        Reply(text="VALUE is now 2.", usage=(1300, 5, 1200)),
    ]


def test_text_output_is_the_answer_and_progress_goes_to_stderr(fake_openai, project):
    fake_openai.script(*edit_script())
    proc = kimicode(fake_openai, project, "--task", "bump VALUE")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "VALUE is now 2.\n"
    assert "→ Read app.py" in proc.stderr and "Traceback" not in proc.stderr
    assert (project / "app.py").read_text() == "VALUE = 2\n"


def test_json_result_reports_steps_usage_cost_and_changed_files(fake_openai, project):
    (project / "stale.txt").write_text("old")
    fake_openai.script(*edit_script())
    proc = kimicode(fake_openai, project, "--task", "bump VALUE", "--output-format", "json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # exactly one JSON document on stdout
    assert result["type"] == "result" and result["status"] == "success"
    assert result["result"] == "VALUE is now 2."
    assert result["num_steps"] == 3
    assert result["usage"] == {"prompt_tokens": 3500, "completion_tokens": 35, "cached_tokens": 2200}
    # kimi-k2-0905-preview prices from the built-in models table: $0.60 in, $0.15 cached, $2.50 out.
    assert result["cost_usd"] == pytest.approx((1300 * 0.60 + 2200 * 0.15 + 35 * 2.50) / 1e6, abs=1e-6)
    assert result["files_changed"] == ["app.py", "out.txt", "stale.txt"]
    transcript = Path(os.environ["XDG_DATA_HOME"]) / "kimicode" / "sessions" / f"{result['session_id']}.jsonl"
    records = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert records[0]["type"] == "meta" and records[0]["cwd"] == str(project)
    assert [r["message"]["role"] for r in records if r["type"] == "message"] == [
        "system", "user", "assistant", "tool", "assistant", "tool", "tool", "assistant"]


def test_stream_json_is_one_event_per_line_ending_with_result(fake_openai, project):
    fake_openai.script(*edit_script())
    proc = kimicode(fake_openai, project, "--task", "bump VALUE", "-o", "stream-json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    types = [line["type"] for line in lines]
    assert types[0] == "turn_started" and types[-2] == "turn_finished" and types[-1] == "result"
    assert {"text_delta", "tool_call_started", "tool_call_finished", "tool_output", "usage"} <= set(types)
    edit = next(line for line in lines if line["type"] == "tool_call_finished" and line["tool"] == "edit_file")
    assert "-VALUE = 1" in edit["display"]["diff"]
    assert lines[-1]["status"] == "success" and lines[-1]["files_changed"] == ["app.py", "out.txt"]


def test_custom_provider_headers_are_sent(fake_openai, project):
    user_config = Path(os.environ["XDG_CONFIG_HOME"]) / "kimicode" / "config.toml"
    user_config.parent.mkdir(parents=True)
    user_config.write_text(
        f'provider = "proxy"\n[providers.proxy]\nbase_url = "{fake_openai.base_url}"\nmodel = "k2"\n'
        '[providers.proxy.headers]\nX-Team = "infra"\n')
    fake_openai.script(Reply(text="ok"))
    env = cli_env(fake_openai)
    for name in ("KIMICODE_PROVIDER", "KIMICODE_BASE_URL", "KIMICODE_MODEL"):
        del env[name]
    proc = kimicode(fake_openai, project, "--task", "hi", env=env)
    assert proc.returncode == 0, proc.stderr
    assert fake_openai.received[0].headers["x-team"] == "infra"
    assert fake_openai.requests[0]["model"] == "k2"


def test_task_from_stdin(fake_openai, project):
    fake_openai.script(Reply(text="read it"))
    proc = kimicode(fake_openai, project, "--task", "-", stdin="explain app.py\n")
    assert proc.returncode == 0, proc.stderr
    assert fake_openai.requests[0]["messages"][-1] == {"role": "user", "content": "explain app.py\n"}


def test_destructive_commands_are_refused_without_a_human(fake_openai, project):
    fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": "git push origin main"})]),
                       Reply(text="I could not push."))
    proc = kimicode(fake_openai, project, "--task", "push", "-o", "json")
    assert proc.returncode == 0
    refusal = fake_openai.requests[1]["messages"][-1]["content"]
    assert "non-interactive" in refusal and "git push" in refusal


def test_budget_exhausted_exits_3(fake_openai, project):
    fake_openai.responder = lambda body: Reply(tool_calls=[ToolCall("list_dir", {})])
    proc = kimicode(fake_openai, project, "--task", "loop", "--max-steps", "2", "-o", "json")
    assert proc.returncode == 3
    result = json.loads(proc.stdout)
    assert result["status"] == "budget_exceeded" and result["stop_reason"] == "max_steps"
    assert result["num_steps"] == 2


def test_backend_still_failing_after_retries_exits_75(fake_openai, project):
    fake_openai.script(Fault(503), Fault(503))
    proc = kimicode(fake_openai, project, "--task", "hi", "-o", "json")
    assert proc.returncode == 75
    result = json.loads(proc.stdout)
    assert result["status"] == "error" and "after 2 attempts" in result["result"]
    assert "retry 1" in proc.stderr


def test_rejected_request_exits_1_and_refused_key_exits_2(fake_openai, project):
    fake_openai.script(Fault(400))
    assert kimicode(fake_openai, project, "--task", "hi").returncode == 1
    fake_openai.script(Fault(401))
    proc = kimicode(fake_openai, project, "--task", "hi")
    assert proc.returncode == 2 and "API key" in proc.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("max_steps = 'many'\n", "config.toml:1: key 'max_steps'"),
        ("[retry]\nmax_attempts = 2\nbase_dealy = 1\n", "config.toml:3: unknown key 'retry.base_dealy'"),
        ("model = \"unterminated\n", "config.toml: invalid TOML"),
    ],
)
def test_bad_config_names_file_line_and_key(fake_openai, project, config, message):
    (project / ".kimicode" / "config.toml").write_text(config)
    proc = kimicode(fake_openai, project, "--task", "hi")
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert fake_openai.requests == []


def test_an_untrusted_repository_cannot_send_keys_elsewhere(fake_openai, project):
    (project / ".kimicode" / "config.toml").write_text(f'base_url = "{fake_openai.base_url}"\n')
    env = cli_env(fake_openai, KIMICODE_PROVIDER="moonshot", MOONSHOT_API_KEY="sk-secret")
    del env["KIMICODE_BASE_URL"]
    proc = kimicode(fake_openai, project, "--task", "hi", env=env)
    assert proc.returncode == 2 and "only a trusted project may set" in proc.stderr
    assert fake_openai.requests == []


def test_missing_api_key_for_a_named_provider_exits_2(fake_openai, project):
    env = cli_env(fake_openai, KIMICODE_PROVIDER="moonshot")
    del env["KIMICODE_BASE_URL"]
    proc = kimicode(fake_openai, project, "--task", "hi", env=env)
    assert proc.returncode == 2 and "MOONSHOT_API_KEY" in proc.stderr


@pytest.mark.parametrize("args", [["--task", "   "], ["--task", "x", "--output-format", "yaml"],
                                  ["--task", "x", "--yolo", "--approval-mode", "ask"], ["--task", "x", "--max-steps", "0"]])
def test_usage_errors_exit_2(fake_openai, project, args):
    proc = kimicode(fake_openai, project, *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigint_cancels_kills_children_and_reports(fake_openai, project):
    pid_file = project / "child.pid"
    fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": "sleep 60 & echo $! > child.pid; wait"})]))
    proc = subprocess.Popen([sys.executable, "-m", "kimicode", "--task", "wait", "-o", "json"], cwd=project,
                            env=cli_env(fake_openai), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert json.loads(out)["status"] == "cancelled"
    assert gone(int(pid_file.read_text()))


def test_help_is_fast_to_load():
    code = (
        "import sys; sys.argv = ['kimicode', '--help']\n"
        "from kimicode.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'textual', 'openai', 'pydantic', 'httpx2') if m in sys.modules), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "--task" in proc.stdout
    assert proc.stderr.strip() == "[]"


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


def test_files_changed_in_a_git_repository(fake_openai, project):
    (project / "dirty.py").write_text("x = 1\n")
    (project / "gone.py").write_text("bye\n")
    (project / ".gitignore").write_text("build/\n")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "init")
    (project / "dirty.py").write_text("x = 2\n")  # already modified before the run
    (project / "untouched_dirty.py").write_text("left alone\n")
    script = "echo 'x = 3' > dirty.py && rm gone.py && mkdir -p build && echo o > build/out && echo n > new.txt"
    fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": script})]), Reply(text="done"))
    proc = kimicode(fake_openai, project, "--task", "go", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files_changed"] == ["dirty.py", "gone.py", "new.txt"]


def test_undecodable_task_bytes_are_replaced_not_fatal(fake_openai, project):
    fake_openai.script(Reply(text="ok"), Reply(text="ok"))
    proc = subprocess.run([sys.executable, "-m", "kimicode", "--task", "-"], cwd=project, env=cli_env(fake_openai),
                          input=b"fix \xff please", capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable.encode(), b"-m", b"kimicode", b"--task", b"fix \xfe"], cwd=project,
                          env=cli_env(fake_openai), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    prompts = [r["messages"][-1]["content"] for r in fake_openai.requests]
    assert prompts == ["fix \ufffd please", "fix \ufffd"]


def test_machine_formats_get_a_result_object_even_when_setup_fails(fake_openai, project):
    (project / ".kimicode" / "config.toml").write_text("max_steps = -1\n")
    proc = kimicode(fake_openai, project, "--task", "hi", "-o", "json")
    assert proc.returncode == 2
    result = json.loads(proc.stdout)
    assert result["status"] == "error" and "max_steps" in result["result"]


def test_an_unusable_data_directory_is_a_clear_setup_error(fake_openai, project, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    proc = kimicode(fake_openai, project, "--task", "hi", env=cli_env(fake_openai, XDG_DATA_HOME=str(blocker)))
    assert proc.returncode == 2
    assert "cannot set up" in proc.stderr and "Traceback" not in proc.stderr


def test_an_endpoint_without_usage_is_warned_about_once(fake_openai, project):
    fake_openai.script(Reply(tool_calls=[ToolCall("list_dir", {})], usage=None), Reply(text="ok", usage=None))
    proc = kimicode(fake_openai, project, "--task", "hi", "--max-cost", "0.01")
    assert proc.returncode == 0
    assert proc.stderr.count("reports no token usage") == 1


def test_agents_md_root_in_the_prompt_nested_ones_with_their_files(fake_openai, project):
    (project / "AGENTS.md").write_text("Use tabs.\n")
    (project / "lib").mkdir()
    (project / "lib" / "AGENTS.md").write_text("lib: never raise, return errors.\n")
    (project / "lib" / "a.py").write_text("A = 1\n")
    (project / "lib" / "b.py").write_text("B = 1\n")
    fake_openai.script(Reply(tool_calls=[ToolCall("read_file", {"path": "lib/a.py"})]),
                       Reply(tool_calls=[ToolCall("read_file", {"path": "lib/b.py"})]), Reply(text="ok"))
    assert kimicode(fake_openai, project, "--task", "look").returncode == 0
    system = fake_openai.requests[0]["messages"][0]["content"]
    assert "Use tabs." in system and "never raise" not in system
    first, second = (r["messages"][-1]["content"] for r in fake_openai.requests[1:])
    assert "Instructions from lib/AGENTS.md" in first and "never raise" in first
    assert "never raise" not in second  # shown once


def test_an_agents_md_symlink_leaving_the_workspace_is_ignored(fake_openai, project, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET\n")
    (project / "AGENTS.md").symlink_to(secret)
    fake_openai.script(Reply(text="ok"))
    assert kimicode(fake_openai, project, "--task", "look").returncode == 0
    assert "TOP SECRET" not in fake_openai.requests[0]["messages"][0]["content"]


def test_plan_mode_reads_but_does_not_write(fake_openai, project):
    fake_openai.script(Reply(tool_calls=[ToolCall("read_file", {"path": "app.py"}),
                                         ToolCall("write_file", {"path": "new.py", "content": "x"})]),
                       Reply(text="1. change VALUE"))
    proc = kimicode(fake_openai, project, "--task", "plan it", "--plan", "-o", "json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["result"] == "1. change VALUE"
    assert not (project / "new.py").exists()
    assert "Mode: plan — you may read and search" in fake_openai.requests[0]["messages"][0]["content"]
    results = [m["content"] for m in fake_openai.requests[1]["messages"] if m["role"] == "tool"]
    assert "VALUE = 1" in results[0] and "plan mode is read-only" in results[1]


def test_init_drafts_agents_md(fake_openai, project):
    draft = "# AGENTS.md\n\nRun tests with `pytest`.\n"
    fake_openai.script(Reply(tool_calls=[ToolCall("list_dir", {})]),
                       Reply(tool_calls=[ToolCall("write_file", {"path": "AGENTS.md", "content": draft})]),
                       Reply(text="Wrote AGENTS.md."))
    proc = kimicode(fake_openai, project, "init")
    assert proc.returncode == 0, proc.stderr
    assert (project / "AGENTS.md").read_text() == draft
    assert "Write an AGENTS.md" in fake_openai.requests[0]["messages"][1]["content"]
