"""Every kernel launch the engine makes at K2 shapes, compiled for real GPUs (no GPU needed:
H100/H200, L40S/L4, A100): nothing spills registers, and nothing asks for more shared memory
than a block may have (such a launch fails on the GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

KERNELS = {"route_kernel", "gate_up_kernel", "down_kernel", "mla_decode_kernel", "combine_kernel", "mla_prefill_kernel", "fp8_linear_kernel",
           "rms_norm_kernel", "rope_and_cache_kernel"}
ARCHES = (90, 89, 80)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[int, tuple[int, list[dict], str]]:
    """(exit status, rows, stderr) per architecture; the compiles run side by side."""
    folder = tmp_path_factory.mktemp("ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, don't interpret
    env.update(TRITON_DEFAULT_FP_FUSION="1", TRITON_CACHE_DIR=str(folder / "cache"))  # not the user's ~/.triton
    runs = {
        arch: subprocess.Popen(
            [sys.executable, "-m", "kimicode.backends.k2.kernels.ptxas_report", f"--arch={arch}", "--json", str(folder / f"{arch}.json")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for arch in ARCHES
    }
    results = {}
    try:
        for arch, run in runs.items():
            _, stderr = run.communicate(timeout=600)
            path = folder / f"{arch}.json"
            results[arch] = (run.returncode, json.loads(path.read_text()) if path.exists() else [], stderr)
    finally:
        for run in runs.values():
            run.kill()  # after a timeout, the others do not outlive the test
    return results


@pytest.mark.parametrize("arch", ARCHES)
def test_every_kernel_is_compiled_and_fits_in_shared_memory(reports, arch):
    status, rows, stderr = reports[arch]
    assert rows, stderr[-2000:]
    assert {row["kernel"] for row in rows} == KERNELS
    overflowing = [(row["kernel"], row["launches"], row["shared"]) for row in rows if any("shared" in p for p in row["problems"])]
    assert not overflowing
    assert all(row["blocks_per_sm"] >= 1 for row in rows)


@pytest.mark.parametrize("arch", ARCHES)
def test_nothing_spills(reports, arch):
    status, rows, stderr = reports[arch]
    assert [(row["kernel"], row["launches"], row["problems"]) for row in rows if row["problems"]] == []
    assert status == 0, stderr[-2000:]


def test_the_report_refuses_to_run_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-m", "kimicode.backends.k2.kernels.ptxas_report"], env=env, capture_output=True, text=True)
    assert run.returncode == 2
    assert "without TRITON_INTERPRET=1" in run.stderr
