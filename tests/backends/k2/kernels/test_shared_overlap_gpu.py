"""The shared expert on a second CUDA stream (skipped without a GPU: on the CPU the flag does nothing)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_the_overlapped_shared_expert_gives_the_same_output_eagerly_and_in_a_graph(monkeypatch):
    import kimicode.backends.k2.model as model
    from kimicode.backends.k2.config import ModelConfig
    from kimicode.backends.k2.kernels.bench import TINY, fill_random, k2_config

    config = ModelConfig.from_dict(k2_config(TINY, layers=2))
    with torch.device("cuda"):
        moe = model.MoE(config, model.Formats(torch.bfloat16))
    fill_random(moe)
    x = torch.randn(1, 4, config.hidden_size, dtype=torch.bfloat16, device="cuda")
    monkeypatch.setattr(model, "OVERLAP_SHARED", False)
    want = moe(x)
    monkeypatch.setattr(model, "OVERLAP_SHARED", True)
    # the same kernels on the same inputs; the routed experts' fp32 atomics may add in another order
    torch.testing.assert_close(moe(x), want, rtol=1e-2, atol=1e-2)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        moe(x)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = moe(x)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, want, rtol=1e-2, atol=1e-2)
