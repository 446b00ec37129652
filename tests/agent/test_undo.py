"""Checkpoints in use: `kimicode --task` snapshots, `kimicode undo` restores and rewinds,
`--auto-commit` commits; the user's git state is never touched."""

import json
import os
import subprocess
import sys

import pytest

from kimicode.agent.session import list_sessions
from tests.fakes.openai_server import Reply, ToolCall

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout


def kimicode(server, cwd, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIMICODE_")} | GIT_ENV
    env |= {"KIMICODE_PROVIDER": "custom", "KIMICODE_BASE_URL": server.base_url, "KIMICODE_MODEL": "k2"}
    return subprocess.run([sys.executable, "-m", "kimicode", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "app.py").write_text("VALUE = 1\n")
    (root / "old.txt").write_text("to be deleted\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / ".gitignore").write_text("*.log\n")
    (root / "keep.log").write_text("ignored, never touched\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    (root / "wip.txt").write_text("uncommitted work\n")  # the user's own pending change
    return root


def tree(root):
    """Every file under root (but .git and kimicode's own ignored index cache) with its bytes and mode."""
    out = {}
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if ".git" in parts or parts[:2] == (".kimicode", "cache") or not path.is_file():
            continue
        out[str(path.relative_to(root))] = (path.read_bytes(), path.stat().st_mode)
    return out


def git_state(root):
    return [git(root, "--no-optional-locks", "status", "--porcelain"), git(root, "stash", "list"), git(root, "branch", "-a"),
            git(root, "rev-parse", "HEAD"), (root / ".git" / "index").read_bytes()]


def edit_task():
    return [
        Reply(tool_calls=[ToolCall("read_file", {"path": "app.py"})]),
        Reply(tool_calls=[ToolCall("edit_file", {"path": "app.py", "old_string": "1", "new_string": "2"}),
                          ToolCall("write_file", {"path": "src/new.py", "content": "NEW = True\n"}),
                          ToolCall("shell", {"command": "rm old.txt && chmod -x run.sh && echo x > wip.txt && echo log >> keep.log"})]),
        Reply(text="done"),
    ]


def test_undo_restores_files_exactly_and_rewinds_the_conversation(fake_openai, repo):
    before_tree, before_git = tree(repo), git_state(repo)
    fake_openai.script(*edit_task())
    proc = kimicode(fake_openai, repo, "--task", "bump VALUE", "--no-auto-test", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert (repo / "app.py").read_text() == "VALUE = 2\n" and not (repo / "old.txt").exists()

    listing = kimicode(fake_openai, repo, "undo", "--list").stdout
    assert "before: bump VALUE" in listing and "before shell: rm old.txt" in listing

    undone = kimicode(fake_openai, repo, "undo")
    assert undone.returncode == 0, undone.stderr
    after = tree(repo)
    assert after.pop("keep.log")[0] == b"ignored, never touched\nlog\n"  # ignored files are not undone
    before_tree.pop("keep.log")
    assert after == before_tree
    assert git_state(repo) == before_git
    (session,) = list_sessions(repo)
    assert [m["role"] for m in session.messages] == ["system"]

    fake_openai.script(Reply(text="fresh"))
    again = kimicode(fake_openai, repo, "--continue", "--task", "try again", "-o", "json")
    assert json.loads(again.stdout)["result"] == "fresh"
    assert [m["role"] for m in fake_openai.requests[-1]["messages"]] == ["system", "user"]


def test_undo_of_the_undo_brings_the_change_back(fake_openai, repo):
    fake_openai.script(*edit_task())
    kimicode(fake_openai, repo, "--task", "bump VALUE", "--no-auto-test")
    changed = tree(repo)
    saved = kimicode(fake_openai, repo, "undo").stdout.split("kimicode undo ")[1].strip()
    assert (repo / "app.py").read_text() == "VALUE = 1\n"
    assert kimicode(fake_openai, repo, "undo", saved).returncode == 0
    assert tree(repo) == changed


def test_repeated_undo_steps_back_turn_by_turn_and_undo_of_undo_restores_the_conversation(fake_openai, repo):
    for turn in ("one", "two"):
        fake_openai.script(Reply(tool_calls=[ToolCall("write_file", {"path": f"{turn}.txt", "content": turn})]),
                           Reply(text=f"wrote {turn}"))
        flag = ["--continue"] if turn == "two" else []
        assert kimicode(fake_openai, repo, *flag, "--task", f"write {turn}", "--no-auto-test").returncode == 0
    first = kimicode(fake_openai, repo, "undo")
    assert not (repo / "two.txt").exists() and (repo / "one.txt").exists()
    assert kimicode(fake_openai, repo, "undo").returncode == 0
    assert not (repo / "one.txt").exists()
    (session,) = list_sessions(repo)
    assert [m["role"] for m in session.messages] == ["system"]
    # Undo the first undo: both files and the whole conversation are back.
    saved = first.stdout.split("kimicode undo ")[1].strip()
    assert kimicode(fake_openai, repo, "undo", saved).returncode == 0
    assert (repo / "one.txt").exists() and (repo / "two.txt").exists()
    (session,) = list_sessions(repo)
    assert [m["content"] for m in session.messages if m["role"] == "user"] == ["write one", "write two"]


def test_undo_refuses_while_a_run_uses_the_session(fake_openai, repo):
    from kimicode.agent.session import SessionLog

    fake_openai.script(*edit_task())
    kimicode(fake_openai, repo, "--task", "bump VALUE", "--no-auto-test")
    (session,) = list_sessions(repo)
    holder = SessionLog.reopen(session)  # as a running kimicode would
    refused = kimicode(fake_openai, repo, "undo")
    holder.close()
    assert refused.returncode == 2 and "in use by another kimicode process" in refused.stderr
    assert (repo / "app.py").read_text() == "VALUE = 2\n"  # nothing was restored


def test_undo_to_a_shell_checkpoint_keeps_earlier_steps(fake_openai, repo):
    fake_openai.script(*edit_task())
    kimicode(fake_openai, repo, "--task", "bump VALUE", "--no-auto-test")
    listing = kimicode(fake_openai, repo, "undo", "--list").stdout.splitlines()
    shell_cp = next(line.split()[1] for line in listing if "before shell:" in line)
    assert kimicode(fake_openai, repo, "undo", shell_cp).returncode == 0
    assert (repo / "old.txt").exists() and (repo / "app.py").read_text() == "VALUE = 2\n"
    (session,) = list_sessions(repo)
    # The conversation matches the files: the edit and the write happened, the command did not.
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant", "tool", "assistant", "tool", "tool"]


def test_outside_a_git_repository(fake_openai, tmp_path):
    fake_openai.script(Reply(text="ok"))
    proc = kimicode(fake_openai, tmp_path, "--task", "hi")
    assert proc.returncode == 0 and "checkpoints are off" in proc.stderr
    refused = kimicode(fake_openai, tmp_path, "undo")
    assert refused.returncode == 2 and "not a git repository" in refused.stderr


def test_auto_commit_commits_only_the_task_changes(fake_openai, repo):
    fake_openai.script(*edit_task())
    head = git(repo, "rev-parse", "HEAD")
    proc = kimicode(fake_openai, repo, "--task", "bump VALUE", "--no-auto-test", "--auto-commit", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["commit"] == git(repo, "rev-parse", "HEAD").strip() != head.strip()
    message = git(repo, "log", "-1", "--format=%B")
    assert message.startswith("kimicode: bump VALUE") and f"kimicode-session: {result['session_id']}" in message
    committed = git(repo, "show", "--name-status", "--format=", "HEAD").split("\n")
    assert sorted(filter(None, committed)) == ["A\tsrc/new.py", "A\twip.txt", "D\told.txt", "M\tapp.py", "M\trun.sh"]


def test_auto_commit_leaves_out_ignored_and_vanished_files_and_keeps_links(fake_openai, repo):
    git(repo, "add", "wip.txt")  # the user's own staged change must stay staged, uncommitted
    script = "echo x > tmp.txt && rm tmp.txt && echo n > notes.log && ln -s app.py 'my link.py'"
    fake_openai.script(Reply(tool_calls=[ToolCall("shell", {"command": script}),
                                         ToolCall("write_file", {"path": "new file.py", "content": "X = 1\n"})]),
                       Reply(text="done"))
    proc = kimicode(fake_openai, repo, "--task", "odd files", "--no-auto-test", "--auto-commit", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    committed = sorted(filter(None, git(repo, "show", "--name-status", "--format=", "HEAD").split("\n")))
    assert committed == ["A\tmy link.py", "A\tnew file.py"]
    assert git(repo, "show", "HEAD:my link.py") == "app.py"  # the link itself, not its target
    assert "A  wip.txt" in git(repo, "--no-optional-locks", "status", "--porcelain")


def test_a_failing_commit_hook_fails_the_run_and_unstages(fake_openai, repo):
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'lint failed' >&2\nexit 1\n")
    hook.chmod(0o755)
    fake_openai.script(Reply(tool_calls=[ToolCall("write_file", {"path": "new.py", "content": "X = 1\n"})]),
                       Reply(text="done"))
    head = git(repo, "rev-parse", "HEAD")
    proc = kimicode(fake_openai, repo, "--task", "add new.py", "--no-auto-test", "--auto-commit", "-o", "json")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["status"] == "error" and "lint failed" in result["commit_error"] and result["commit"] is None
    assert git(repo, "rev-parse", "HEAD") == head
    assert "?? new.py" in git(repo, "--no-optional-locks", "status", "--porcelain")  # not left staged


async def test_in_session_undo_restores_files_rewinds_the_agent_and_the_transcript(fake_openai, repo):
    from kimicode.agent.setup import create_agent
    from kimicode.agent.undo import undo_last_turn
    from kimicode.agent.checkpoints import CheckpointError
    from kimicode.config import load_settings

    settings = load_settings(repo, {"provider": "custom", "base_url": fake_openai.base_url, "model": "k2",
                                    "auto_test": False, "repo_map": False})
    agent = create_agent(settings, repo, default_mode="yolo")

    def files():  # ignored files are never restored (see the tests above)
        return {path: data for path, data in tree(repo).items() if path != "keep.log"}

    before = files()
    fake_openai.script(Reply(text="hello"), *edit_task())
    [e async for e in agent.run("say hello")]
    after_first = files()
    history_after_first = list(agent.messages)
    [e async for e in agent.run("change things")]
    assert files() != after_first

    result = undo_last_turn(agent)
    assert files() == after_first and agent.messages == history_after_first
    assert result.restored.label == "before: change things"
    second = undo_last_turn(agent)
    assert files() == before and [m["role"] for m in agent.messages] == ["system"]
    with pytest.raises(CheckpointError, match="nothing to undo"):
        undo_last_turn(agent)
    agent.session.close()
    # A resume sees the rewound history, and `kimicode undo` can undo the undo.
    [state] = list_sessions(repo)
    assert [m["role"] for m in state.messages] == ["system"]
    assert kimicode(fake_openai, repo, "undo", second.saved.id[:10]).returncode == 0
    assert files() == after_first
    assert list_sessions(repo)[0].messages == history_after_first
