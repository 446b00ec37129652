"""FP8 linears whose K ranges meet in the kernel, at K2's decode shapes, on a real GPU.

The interpreter runs programs one after another, so it cannot show a wrong "last to arrive"
test or a missing memory fence; here the K ranges of a tile really race. Skipped without a GPU.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# (out, in) of q_a, kv_a and the shared expert's gate/up at one token: each splits K
SHAPES = {"q_a": (1536, 7168), "kv_a": (576, 7168), "shared gate/up": (2048, 7168)}


def random_fp8(out_f: int, in_f: int, seed: int):
    from kimicode.backends.k2.quant import quantize_fp8_block

    g = torch.Generator("cuda").manual_seed(seed)  # made on the GPU: the dense MLP's pair is 264M weights
    return quantize_fp8_block(torch.randn(out_f, in_f, generator=g, device="cuda") / in_f**0.5, (128, 128))


def captured(fn):
    """(a CUDA graph of fn, its outputs), after the warm-up on a side stream that capture needs."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    return graph, outputs


@pytest.mark.parametrize("name", list(SHAPES))
def test_split_k_is_exact_every_time_eagerly_and_in_a_graph(name):
    import torch.nn.functional as F

    from kimicode.backends.k2.kernels.fp8_linear import fp8_linear, fp8_linear_reference, swiglu

    out_f, in_f = SHAPES[name]
    gate, up = random_fp8(out_f, in_f, 1), random_fp8(out_f, in_f, 2)
    x = torch.randn(1, in_f, device="cuda", dtype=torch.bfloat16)
    if name == "shared gate/up":
        def run():
            return swiglu(x, gate, up)
        want = F.silu(fp8_linear_reference(x.float(), *gate)) * fp8_linear_reference(x.float(), *up)
    else:
        def run():
            return fp8_linear(x, *gate)
        want = fp8_linear_reference(x.float(), *gate)
    first = run()
    torch.testing.assert_close(first.float(), want, rtol=2e-2, atol=2e-2)
    for _ in range(50):  # the partials are summed in split order whichever range arrives last
        assert torch.equal(run(), first)
    graph, out = captured(run)
    for _ in range(20):
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, first)


def test_one_graph_of_narrow_and_wide_split_launches_replays_exactly():
    """Layer 0 of K2 in order: q_a (96 tiles), the dense MLP's 18,432-wide pair, then kv_a and q_a
    again, all captured in one graph: every launch must find its arrival counts where it left them."""
    from kimicode.backends.k2.kernels.fp8_linear import fp8_linear, swiglu

    q_a, kv_a = random_fp8(1536, 7168, 3), random_fp8(576, 7168, 4)
    gate, up = random_fp8(18432, 7168, 5), random_fp8(18432, 7168, 6)
    x = torch.randn(1, 7168, device="cuda", dtype=torch.bfloat16)

    def layer():
        return fp8_linear(x, *q_a), swiglu(x, gate, up), fp8_linear(x, *kv_a), fp8_linear(x, *q_a)

    eager = layer()
    graph, outputs = captured(layer)
    for _ in range(5):
        graph.replay()
        torch.cuda.synchronize()
        for got, want in zip(outputs, eager):
            assert torch.equal(got, want)
