"""Session transcripts: replay, torn lines, resume after SIGKILL, listing."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kimicode.agent.session import SessionError, SessionLog, find_session, list_sessions, load_session
from tests.fakes.openai_server import Reply, ToolCall


def message(role, content, **extra):
    return {"role": role, "content": content, **extra}


def test_replay_applies_messages_usage_compaction_and_rewind(tmp_path):
    log = SessionLog("s1", tmp_path / "s1.jsonl")
    log.append("meta", id="s1", cwd="/w")
    for i in range(4):
        log.append("message", message=message("user", f"m{i}"))
    log.append("usage", usage=[100, 10, 50], cost_usd=0.25)
    log.append("usage", usage=[200, 20, 0], cost_usd=0.5)
    log.append("checkpoint", id="cp1", label="before: m2", turn=2)
    log.append("rewind", checkpoint="cp1")
    log.append("message", message=message("user", "after rewind"))
    log.append("compaction", messages=[message("system", "s"), message("user", "summary")])
    log.append("message", message=message("user", "latest"))
    log.close()
    state = load_session(tmp_path / "s1.jsonl")
    assert [m["content"] for m in state.messages] == ["s", "summary", "latest"]
    assert state.usage == [300, 30, 50] and state.cost_usd == pytest.approx(0.75)
    assert state.skipped_lines == 0


def test_a_torn_last_line_is_skipped_and_appending_goes_on_cleanly(tmp_path):
    path = tmp_path / "s2.jsonl"
    log = SessionLog("s2", path)
    log.append("meta", id="s2", cwd="/w")
    log.append("message", message=message("user", "kept"))
    log.close()
    with path.open("a") as f:
        f.write('{"type": "message", "message": {"role": "assist')  # killed mid-write
    state = load_session(path)
    assert [m["content"] for m in state.messages] == ["kept"] and state.skipped_lines == 1
    reopened = SessionLog.reopen(state)
    reopened.append("message", message=message("user", "next"))
    reopened.close()
    again = load_session(path)
    assert [m["content"] for m in again.messages] == ["kept", "next"] and again.skipped_lines == 1


def test_a_rewind_after_compaction_restores_the_history_of_its_checkpoint(tmp_path):
    log = SessionLog("s3", tmp_path / "s3.jsonl")
    log.append("meta", id="s3", cwd="/w")
    for i in range(3):
        log.append("message", message=message("user", f"m{i}"))
    log.append("checkpoint", id="cp", label="before: t2", turn=3)
    log.append("message", message=message("user", "t2"))
    log.append("compaction", messages=[message("system", "s"), message("user", "summary"), message("user", "t2")])
    log.append("message", message=message("assistant", "done t2"))
    log.append("rewind", checkpoint="cp")
    log.close()
    assert [m["content"] for m in load_session(tmp_path / "s3.jsonl").messages] == ["m0", "m1", "m2"]


def test_foreign_json_lines_are_skipped_not_fatal(tmp_path):
    path = tmp_path / "s4.jsonl"
    path.write_text('{"type": "meta", "id": "s4"}\n[1, 2]\n{"type": "message"}\n'
                    '{"type": "message", "message": {"role": "user", "content": "ok"}}\n')
    state = load_session(path)
    assert state.skipped_lines == 2 and [m["content"] for m in state.messages] == ["ok"]


def test_one_writer_per_session(tmp_path):
    path = tmp_path / "s5.jsonl"
    first = SessionLog("s5", path)
    first.append("meta", id="s5")
    with pytest.raises(SessionError, match="in use by another kimicode process"):
        SessionLog("s5", path)
    first.close()
    SessionLog("s5", path).close()


def test_not_a_session_and_unknown_ids_are_clear_errors(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"type": "message", "message": {}}\n')
    with pytest.raises(SessionError, match="not a kimicode session"):
        load_session(tmp_path / "x.jsonl")
    with pytest.raises(SessionError, match="no session 'nope'"):
        find_session("nope")


def env_for(server, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIMICODE_", "MOONSHOT_"))}
    return env | {"KIMICODE_PROVIDER": "custom", "KIMICODE_BASE_URL": server.base_url,
                  "KIMICODE_MODEL": "kimi-k2-0905-preview"} | extra


def test_resume_after_sigkill_mid_turn_keeps_everything_before(fake_openai, tmp_path):
    (tmp_path / "notes.txt").write_text("remember the milk\n")
    fake_openai.script(
        Reply(text="Reading first.", tool_calls=[ToolCall("read_file", {"path": "notes.txt"})]),
        Reply(tool_calls=[ToolCall("shell", {"command": "sleep 60"})]),
    )
    proc = subprocess.Popen([sys.executable, "-m", "kimicode", "--task", "check notes", "-o", "json"], cwd=tmp_path,
                            env=env_for(fake_openai), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while len(fake_openai.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # the shell call has started
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    (state,) = list_sessions(tmp_path.resolve())
    roles = [m["role"] for m in state.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]

    fake_openai.script(Reply(text="Resumed fine."))
    done = subprocess.run([sys.executable, "-m", "kimicode", "--continue", "--task", "go on", "-o", "json"],
                          cwd=tmp_path, env=env_for(fake_openai), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["session_id"] == state.id and result["result"] == "Resumed fine."
    sent = fake_openai.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "assistant", "tool", "user"]
    assert "remember the milk" in sent[3]["content"]
    assert "stopped before this call finished" in sent[5]["content"]  # the killed call got a result
    assert sent[-1]["content"] == "go on"


def test_sessions_command_lists_this_workspace(fake_openai, tmp_path):
    fake_openai.script(Reply(text="one"), Reply(text="two"))
    for task in ("first task", "second task"):
        subprocess.run([sys.executable, "-m", "kimicode", "--task", task], cwd=tmp_path, env=env_for(fake_openai),
                       check=True, capture_output=True, timeout=60)
    listing = subprocess.run([sys.executable, "-m", "kimicode", "sessions"], cwd=tmp_path, env=env_for(fake_openai),
                             capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert len(listing) == 2 and "second task" in listing[0] and "first task" in listing[1]
    elsewhere = subprocess.run([sys.executable, "-m", "kimicode", "--continue", "--task", "x"], cwd=tmp_path / "..",
                               env=env_for(fake_openai), capture_output=True, text=True, timeout=60)
    assert elsewhere.returncode == 2 and "no earlier session" in elsewhere.stderr


def test_a_resumed_session_gets_a_fresh_system_prompt(fake_openai, tmp_path):
    fake_openai.script(Reply(text="1. do it"), Reply(text="done"))
    subprocess.run([sys.executable, "-m", "kimicode", "--plan", "--task", "plan it"], cwd=tmp_path,
                   env=env_for(fake_openai), check=True, capture_output=True, timeout=60)
    (tmp_path / "AGENTS.md").write_text("Always run make lint.\n")
    subprocess.run([sys.executable, "-m", "kimicode", "--continue", "--task", "go ahead"], cwd=tmp_path,
                   env=env_for(fake_openai), check=True, capture_output=True, timeout=60)
    first, second = (r["messages"][0]["content"] for r in fake_openai.requests)
    assert "Mode: plan" in first and "Mode: auto" in second and "Always run make lint." in second
    (state,) = list_sessions(tmp_path.resolve())
    assert state.messages[0]["content"] == second  # the transcript replays to the new prompt


def test_resuming_a_session_of_another_workspace_is_refused(fake_openai, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fake_openai.script(Reply(text="ok"))
    subprocess.run([sys.executable, "-m", "kimicode", "--task", "hi"], cwd=tmp_path / "a", env=env_for(fake_openai),
                   check=True, capture_output=True, timeout=60)
    (state,) = list_sessions((tmp_path / "a").resolve())
    proc = subprocess.run([sys.executable, "-m", "kimicode", "--resume", state.id, "--task", "x"], cwd=tmp_path / "b",
                          env=env_for(fake_openai), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "belongs to" in proc.stderr


def test_odd_session_ids_and_records_out_of_order_are_refused_cleanly(tmp_path):
    import pytest as _pytest

    from kimicode.agent.session import SessionError, find_session, load_session, sessions_dir

    for bad in ("/tmp/x", "a**", "../x", "", "id with space"):
        with _pytest.raises(SessionError, match="not a session id"):
            find_session(bad)
    sessions_dir().mkdir(parents=True, exist_ok=True)
    odd = sessions_dir() / "20260101-000000-abcdef.jsonl"
    odd.write_text('{"type": "meta", "id": "x", "cwd": "/"}\n{"type": "system", "content": "early"}\n'
                   '{"type": "message", "message": {"role": "user", "content": "hi"}}\n')
    state = load_session(odd)  # a system record before any message is skipped, not a crash
    assert state.skipped_lines == 1 and state.messages == [{"role": "user", "content": "hi"}]
