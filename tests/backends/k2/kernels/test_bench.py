"""`kimicode bench` end to end in its --tiny dry run (Triton's interpreter on the CPU): every
section prints its rows with passing checks, and a broken kernel is reported, not hidden."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from kimicode.backends.k2.kernels import bench  # noqa: E402
from kimicode.backends.k2.kernels import moe  # noqa: E402

ROOT = Path(__file__).resolve().parents[4]


def table_rows(out: str) -> dict[str, str]:
    """Table lines by case name (the first column)."""
    lines = out.split("-" * 40, 1)[1].splitlines()
    return {line[:30].strip(): line for line in lines if line.strip() and not line.startswith("-")}


def test_kernels_dry_run(capsys, tmp_path):
    assert bench.main(["kernels", "--tiny", "--reps", "1", "--json", str(tmp_path / "rows.json")]) == 0
    rows = table_rows(capsys.readouterr().out)
    expected = ["moe decode 1 tok", "moe decode 8 tok", "moe decode 1 tok fp8 experts", "moe decode 1 tok bf16 experts",
                "moe prefill 64 tok", "mla decode 64 ctx", "mla decode 64 ctx (3 stages)", "mla decode 256 ctx",
                "mla turn 8 tok 64 h16", "mla turn 8 tok 64 h64", "mla prefill 64+0 64x64w4", "mla prefill 64+192 128x64w8", "mla prefill 64+192 sdpa",
                "fp8 q_a 64->32", "bf16 q_a 64->32", "fp8 q_b 32->128", "fp8 kv_a 64->48", "fp8 o 64->64", "launch cost, per kernel"]
    for case in expected:
        assert case in rows, case
    for case in expected:
        if not case.startswith("bf16") and not case.endswith("sdpa"):
            assert " PASS " in rows[case], rows[case]
    assert "n/a (tiny)" in rows["moe decode 1 tok"]
    saved = json.loads((tmp_path / "rows.json").read_text())
    assert saved["section"] == "kernels" and not any(row["failed"] for row in saved["rows"])


def test_layer_dry_run(capsys):
    assert bench.main(["layer", "--tiny", "--reps", "1"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert " PASS " in rows["k2 layer 1 tok 64 ctx"]
    assert " PASS " in rows["k2 layer 1 tok 64 ctx, shared"]  # the key: a row's first 30 characters
    assert " PASS " in rows["k2 layer 1 tok 64 ctx bf16 lin"]
    for new in (8, 64):  # both attention paths of a turn after 64 cached tokens, checked against each other
        assert " PASS " in rows[f"mla turn 64+{new} absorbed"] and " PASS " in rows[f"mla turn 64+{new} expanded"]


def test_e2e_dry_run(capsys):
    assert bench.main(["e2e", "--tiny", "--reps", "1"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    for model in ("moonlight 2L", "k2-width 2L"):
        assert "PASS finite" in rows[f"{model} decode b=1"]
        assert "tok/s" in rows[f"{model} vs transformers"]  # transformers is installed here: not skipped
        assert f"{model} full prefill 72" in rows
        assert "TTFT 1/" in rows[f"{model} prefix turn 64+8"]
    assert "all checks passed" in out


def test_a_broken_kernel_fails_the_run(capsys, monkeypatch):
    monkeypatch.setattr(moe, "fused_moe", lambda x, *args, **kwargs: torch.zeros_like(x))
    assert bench.main(["kernels", "--tiny", "--reps", "1", "--only", "moe decode 1"]) == 1
    out = capsys.readouterr().out
    assert " FAIL " in table_rows(out)["moe decode 1 tok"]
    assert "FAILED: moe decode 1 tok" in out


def test_a_case_that_raises_is_an_error_row(capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no kernel today")

    monkeypatch.setattr(moe, "fused_moe", broken)
    assert bench.main(["kernels", "--tiny", "--reps", "1", "--only", "moe decode 1"]) == 1
    row = table_rows(capsys.readouterr().out)["moe decode 1 tok"]
    assert "ERROR" in row and "no kernel today" in row


def test_without_a_gpu_only_the_dry_run_runs(capsys):
    assert bench.main(["kernels"]) == 2
    assert "needs a CUDA GPU; use --tiny" in capsys.readouterr().err


def test_the_launcher_needs_no_install(tmp_path):
    """bench/k2_gpu.py with `python -S`: no site-packages .pth, so no editable-install mapping of
    kimicode.backends; torch and triton come in through PYTHONPATH alone, as on the GPU machine."""
    site_packages = str(Path(torch.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": site_packages, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, "-S", str(ROOT / "bench" / "k2_gpu.py"), "kernels", "--tiny", "--reps", "1", "--only", "fp8 q_a"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert " PASS " in table_rows(run.stdout)["fp8 q_a 64->32"]


def test_the_cli_passes_its_options_through(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from kimicode.cli import app

    seen = []
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(argv) or 0)
    path = str(tmp_path / "rows.json")
    result = CliRunner().invoke(app, ["bench", "layer", "--tiny", "--reps", "2", "--only", "k2", "--json", path])
    assert result.exit_code == 0, result.output
    assert seen == [["layer", "--tiny", "--json", path, "--reps", "2", "--only", "k2"]]


def test_the_launcher_runs_the_gpu_tests_without_an_install(tmp_path):
    """`bench/k2_gpu.py tests` (what bench/gpu_session.sh runs first): the GPU-marked tests are
    collected through the launcher's mapping; without a GPU they skip, and nothing fails to import."""
    site_packages = str(Path(torch.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": site_packages}
    env.pop("KIMICODE_GPU_TESTS", None)
    run = subprocess.run([sys.executable, "-S", str(ROOT / "bench" / "k2_gpu.py"), "tests", "-rs"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "11 skipped" in run.stdout and "needs a CUDA GPU" in run.stdout  # CUDA graphs ×3, MLA prefill ×3, shared overlap, FP8 split-K ×4


def test_the_ptxas_cli_passes_its_options_through(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from kimicode.backends.k2.kernels import ptxas_report
    from kimicode.cli import app

    seen = []
    monkeypatch.setattr(ptxas_report, "main", lambda argv: seen.append(argv) or 0)
    path = str(tmp_path / "rows.json")
    result = CliRunner().invoke(app, ["bench", "ptxas", "--arch", "80", "--json", path])
    assert result.exit_code == 0, result.output
    assert seen == [["--arch=80", "--json", path]]
