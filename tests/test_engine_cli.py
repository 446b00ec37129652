"""`--backend local`, `kimicode engine info` and `kimicode engine chat`, as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.backends.k2.checkpoints import write_tiny_k2  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_k2(tmp_path_factory.mktemp("models") / "tiny-k2")


@pytest.fixture
def project(tmp_path, isolated_home):
    root = tmp_path / "project"
    root.mkdir()
    (root / "app.py").write_text("VALUE = 1\n")
    config = isolated_home / "config" / "kimicode"
    config.mkdir(parents=True)
    (config / "config.toml").write_text('[local]\ndevice = "cpu"\ndtype = "float32"\nmax_output = 30\nseed = 7\n')
    return root


def kimicode(cwd, *args, stdin=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIMICODE_", "MOONSHOT_", "OPENROUTER_"))}
    return subprocess.run([sys.executable, "-m", "kimicode", *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_a_headless_task_runs_on_the_local_engine(checkpoint, project):
    proc = kimicode(project, "--backend", "local", "--model-path", str(checkpoint), "--task", "say hi",
                    "-o", "json", "--no-auto-test", "--max-steps", "2")
    assert "Traceback" not in proc.stderr, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["model"] == "tiny-k2"
    assert result["stop_reason"] in ("end_turn", "length", "max_steps"), result
    usage = result["usage"]
    assert usage["prompt_tokens"] > 1000  # system prompt and tool declarations, in a 644-id vocabulary
    assert 0 < usage["completion_tokens"] <= 60
    assert result["cost_usd"] == 0.0


def test_local_backend_without_a_folder_is_a_usage_error(project, tmp_path):
    proc = kimicode(project, "--backend", "local", "--task", "x")
    assert proc.returncode == 2
    assert "backend 'local' needs a checkpoint folder: pass --model-path DIR" in proc.stderr
    empty = tmp_path / "weights"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    proc = kimicode(project, "--backend", "local", "--model-path", str(empty), "--task", "x")
    assert proc.returncode == 2
    assert "tiktoken.model is missing" in proc.stderr


def test_a_broken_checkpoint_is_reported_not_a_traceback(checkpoint, project, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in checkpoint.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "hidden_size": 80}))
    proc = kimicode(project, "--backend", "local", "--model-path", str(broken), "--task", "x", "-o", "json")
    assert proc.returncode == 2, proc.stderr
    assert "the checkpoint does not match config.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_engine_info_counts_parameters_without_loading_torch(checkpoint):
    from kimicode.backends.k2.config import ModelConfig
    from kimicode.backends.k2.model import Formats, Transformer

    with torch.device("meta"):
        model = Transformer(ModelConfig.from_dir(checkpoint), Formats(torch.bfloat16))
    total = sum(p.numel() for p in model.parameters())
    code = ("import sys; from kimicode.cli import app\n"
            f"try:\n    app(['engine', 'info', {str(checkpoint)!r}])\n"
            "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "False"
    assert f"{total:,}" in proc.stdout
    assert "deepseek_v3" in proc.stdout and "4 layers (2 dense, 2 MoE)" in proc.stdout
    assert "on a GPU: fused MoE kernels, decode as a CUDA graph" in proc.stdout


def test_engine_info_on_a_non_k2_folder(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    proc = kimicode(tmp_path, "engine", "info", str(tmp_path))
    assert proc.returncode == 2
    assert "model_type 'llama' is not a K2-family model" in proc.stderr


def test_engine_chat_reuses_the_cache_on_the_second_turn(checkpoint, tmp_path):
    proc = kimicode(tmp_path, "engine", "chat", str(checkpoint), "--device", "cpu", "--max-tokens", "8",
                    stdin="hello there\nand again\n\n")
    assert proc.returncode == 0, proc.stderr
    turns = [line for line in proc.stderr.splitlines() if line.startswith("[")]
    assert len(turns) == 2, proc.stderr
    assert "(0 cached)" in turns[0]
    cached = int(turns[1].split("(")[1].split()[0])
    first_prompt = int(turns[0][1:].split()[0])
    assert cached >= first_prompt


def test_engine_info_says_when_the_experts_miss_the_fused_kernels(checkpoint, tmp_path):
    import json

    config = json.loads((checkpoint / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "moe_intermediate_size": 48}))
    proc = kimicode(tmp_path, "engine", "info", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "experts in a torch loop, no CUDA graph (widths not multiples of 32)" in proc.stdout
