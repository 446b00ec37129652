"""Launches per decoded layer: the counter itself, and the budget a K2 layer's decode keeps to."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from kimicode.backends.k2.kernels.launches import count_launches  # noqa: E402
from kimicode.backends.k2.kernels.norm import rms_norm  # noqa: E402

ROOT = Path(__file__).resolve().parents[4]
# Per decoded token, before the fused norm, rope/cache, SwiGLU and split-K kernels: 98 and 86
# with FP8 linears, 86 and 74 with bf16 ones (docs/benchmarks.md).
BUDGET = {"MoE": 20, "dense": 14}
TORCH_ELEMENTWISE = {"mul", "pow", "rsqrt", "mean", "stack", "sub", "silu", "zeros", "full", "arange", "index_put_", "copy_"}


def test_the_counter_counts_what_launches_and_nothing_else():
    x = torch.randn(4, 8)
    weight = torch.ones(8)
    with count_launches() as launches:
        x.view(2, 16)  # a view
        x.to(x.dtype)  # a no-op conversion
        x.float()
        y = x + 1
        y.add_(1)
        rms_norm(x, weight, 1e-6)  # the interpreter's own tensor work inside is not counted
    assert dict(launches) == {"add": 1, "add_": 1, "triton:_rms_norm_kernel": 1}


def test_the_counter_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        with count_launches():
            pass


def load_bench_script():
    spec = importlib.util.spec_from_file_location("decode_launches", ROOT / "bench" / "decode_launches.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.parametrize("linear", ["fp8", "bf16"])
@pytest.mark.parametrize(("kind", "layer"), [("MoE", 1), ("dense", 0)])
def test_a_decoded_layer_keeps_to_its_launch_budget(kind, layer, linear, monkeypatch):
    import kimicode.backends.k2.model as model
    from kimicode.backends.k2.config import ModelConfig

    monkeypatch.setenv("KIMICODE_KERNELS", "on")  # the script sets it for its own runs: undone after the test
    script = load_bench_script()
    monkeypatch.setattr(model, "KERNELS", "on")
    config = ModelConfig.from_dict(script.k2_config(script.TINY, layers=2))
    launches = script.decode_launches(script.random_block(config, layer, script.FORMATS[linear]), config)
    assert sum(launches.values()) <= BUDGET[kind], dict(launches)
    assert not TORCH_ELEMENTWISE & set(launches), dict(launches)  # norms, rope and cache writes stay fused
