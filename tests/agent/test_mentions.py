import os

from kimicode.agent.mentions import HEADER, MAX_FILE_BYTES, expand_mentions, mentioned_paths
from kimicode.workspace import Workspace


def test_mentions_are_at_words_not_mail_addresses():
    assert mentioned_paths("see @src/app.py, and @docs/ but not me@example.com (@a.txt)") == [
        "src/app.py", "docs/"]
    assert mentioned_paths("@a.py twice @a.py; @b.py.") == ["a.py", "b.py"]


def test_files_and_folders_are_attached_and_unknown_mentions_stay_text(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("VALUE = 1\n")
    (tmp_path / "src" / "util.py").write_text("")
    prompt = "fix @src/app.py using @src and @missing.py"
    expanded = expand_mentions(prompt, Workspace(tmp_path))
    assert expanded.startswith(prompt + HEADER)
    assert '<file path="src/app.py">\nVALUE = 1\n</file>' in expanded
    assert '<folder path="src">\napp.py\nutil.py\n</folder>' in expanded
    assert "missing.py" not in expanded.split(HEADER)[1]
    assert expand_mentions("no mentions", Workspace(tmp_path)) == "no mentions"


def test_outside_binary_large_and_unreadable_files(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("outside")
    (root / "blob.bin").write_bytes(b"\0\1\2" * 10)
    (root / "big.txt").write_text("x" * (MAX_FILE_BYTES + 10))
    (root / "locked.txt").write_text("no")
    os.chmod(root / "locked.txt", 0)
    expanded = expand_mentions("@../secret.txt @blob.bin @big.txt @locked.txt", Workspace(root))
    assert "outside" not in expanded
    assert '<file path="blob.bin">(binary file, not shown)</file>' in expanded
    assert "cut at 100000 bytes" in expanded and "x" * (MAX_FILE_BYTES + 1) not in expanded
    if os.geteuid() != 0:  # root reads anything
        assert "locked.txt" not in expanded.split(HEADER)[1]
