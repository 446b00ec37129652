"""Block-FP8 linear kernel against dequantise-then-matmul (Triton's interpreter on the CPU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402

from kimicode.backends.k2.kernels import fp8_linear as fp8_module  # noqa: E402
from kimicode.backends.k2.kernels.fp8_linear import fp8_linear, fp8_linear_reference, swiglu  # noqa: E402
from kimicode.backends.k2.quant import quantize_fp8_block  # noqa: E402


@pytest.mark.parametrize("splits", [1, 2, None])  # None: as many K splits as the rows call for
@pytest.mark.parametrize(("rows", "out_f", "in_f"), [(1, 64, 96), (5, 80, 64), (33, 96, 70)])
def test_fp8_linear_matches_dequantise_then_matmul(rows, out_f, in_f, splits):
    g = torch.Generator().manual_seed(rows)
    weight, scale_inv = quantize_fp8_block(torch.randn(out_f, in_f, generator=g), (32, 32))
    x = torch.randn(rows, in_f, generator=g)
    out = fp8_linear(x, weight, scale_inv, (32, 32), block_m=16, block_n=16, splits=splits)
    expected = fp8_linear_reference(x, weight, scale_inv, (32, 32))
    assert out.shape == (rows, out_f)
    assert float((out - expected).abs().max() / expected.abs().max()) < 1e-5


def test_leading_dimensions_are_kept():
    weight, scale_inv = quantize_fp8_block(torch.randn(32, 64), (32, 32))
    x = torch.randn(2, 3, 64)
    assert fp8_linear(x, weight, scale_inv, (32, 32), block_n=16).shape == (2, 3, 32)


def test_a_tile_narrower_than_the_scale_block_is_refused():
    weight, scale_inv = quantize_fp8_block(torch.randn(64, 64), (32, 32))
    with pytest.raises(ValueError, match="block_n 24 must divide the scale block 32"):
        fp8_linear(torch.randn(1, 64), weight, scale_inv, (32, 32), block_n=24)


def test_every_finite_e4m3_value_is_decoded_exactly():
    """The kernel decodes the bytes itself (integer ops, so pre-sm_89 GPUs run it): each of
    the 254 finite codes, subnormals included, must come out as torch reads it."""
    codes = torch.arange(256, dtype=torch.uint8)
    codes[codes & 0x7F == 0x7F] = 0  # the two NaN codes
    weight = codes.view(torch.float8_e4m3fn).repeat(16, 1)  # [16 out, 256 in]
    scale_inv = torch.ones(1, 8)
    identity = torch.eye(256)  # row i of the output reads column i of the weight
    out = fp8_linear(identity, weight, scale_inv, (32, 32), block_m=16, block_n=16, splits=1)
    assert torch.equal(out.T, weight.float())


@pytest.mark.parametrize("splits", [1, 3, None])
@pytest.mark.parametrize(("rows", "out_f", "in_f"), [(1, 64, 96), (6, 48, 128), (20, 32, 70)])
def test_swiglu_pair_matches_silu_of_gate_times_up(rows, out_f, in_f, splits):
    g = torch.Generator().manual_seed(out_f + rows)
    gate = quantize_fp8_block(torch.randn(out_f, in_f, generator=g), (32, 32))
    up = quantize_fp8_block(torch.randn(out_f, in_f, generator=g), (32, 32))
    x = torch.randn(rows, in_f, generator=g)
    got = swiglu(x, gate, up, (32, 32), block_m=16, block_n=16, splits=splits)
    want = F.silu(fp8_linear_reference(x, *gate, (32, 32))) * fp8_linear_reference(x, *up, (32, 32))
    assert got.shape == (rows, out_f)
    assert float((got - want).abs().max() / want.abs().max()) < 1e-5


def test_split_k_leaves_its_arrival_counts_at_zero_and_repeats_exactly():
    """The last K range of each tile sums the partials and resets the tile's count: the next
    launch (or CUDA graph replay) starts from zero, and the sum order never changes."""
    g = torch.Generator().manual_seed(9)
    weight, scale_inv = quantize_fp8_block(torch.randn(64, 256, generator=g), (32, 32))
    x = torch.randn(2, 256, generator=g)
    first = fp8_linear(x, weight, scale_inv, (32, 32), block_n=16, splits=4)
    counts = fp8_module.arrivals(x.device, 4)
    assert int(counts.abs().sum()) == 0
    assert torch.equal(fp8_linear(x, weight, scale_inv, (32, 32), block_n=16, splits=4), first)
    assert float((first - fp8_linear_reference(x, weight, scale_inv, (32, 32))).abs().max()) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("splits", [1, 3, None])
def test_swiglu_pair_of_unquantised_weights(splits, dtype):
    """K2-Thinking keeps its shared expert and dense MLP in bf16: the same launch, no scales."""
    g = torch.Generator().manual_seed(11)
    gate, up = (torch.randn(48, 200, generator=g) / 14).to(dtype), (torch.randn(48, 200, generator=g) / 14).to(dtype)
    x = torch.randn(3, 200, generator=g).to(dtype)
    got = swiglu(x, (gate, None), (up, None), (32, 32), block_n=16, splits=splits)
    want = F.silu(x.float() @ gate.float().T) * (x.float() @ up.float().T)
    assert got.dtype == dtype
    assert float((got.float() - want).abs().max() / want.abs().max()) < (1e-5 if dtype == torch.float32 else 2e-2)


def test_swiglu_projections_of_different_shapes_or_formats_are_refused():
    gate = quantize_fp8_block(torch.randn(32, 64), (32, 32))
    up = quantize_fp8_block(torch.randn(64, 64), (32, 32))
    with pytest.raises(ValueError, match=r"gate \(32, 64\) torch.float8_e4m3fn and up \(64, 64\) torch.float8_e4m3fn projections must have one shape"):
        swiglu(torch.randn(1, 64), gate, up, (32, 32))
    with pytest.raises(ValueError, match="one shape and format"):
        swiglu(torch.randn(1, 64), gate, (torch.randn(32, 64), None), (32, 32))
    with pytest.raises(ValueError, match="unquantised weights must be in x's dtype torch.float32, not torch.bfloat16"):
        swiglu(torch.randn(1, 64), (torch.randn(32, 64).bfloat16(), None), (torch.randn(32, 64).bfloat16(), None), (32, 32))


def test_the_arrival_counts_of_a_stream_are_never_reallocated_under_a_launch():
    """A captured CUDA graph holds the counts' address: growing must not free the old buffer."""
    first = fp8_module.arrivals(torch.device("cpu"), 96)
    assert fp8_module.arrivals(torch.device("cpu"), 1152).data_ptr() == first.data_ptr()  # K2's widest split launch fits
    grown = fp8_module.arrivals(torch.device("cpu"), fp8_module.ARRIVAL_SLOTS + 1)
    assert grown.data_ptr() != first.data_ptr() and any(t is first for t in fp8_module._outgrown)


def test_weights_the_kernel_would_misread_are_refused():
    weight, scale_inv = quantize_fp8_block(torch.randn(64, 64), (32, 32))
    x = torch.randn(1, 64)
    with pytest.raises(ValueError, match="a scaled weight must be float8_e4m3fn, not torch.float32"):
        fp8_linear(x, weight.float(), scale_inv, (32, 32))
    with pytest.raises(ValueError, match=r"scale_inv must be contiguous of shape \(2, 2\) for blocks \(32, 32\), got \(2, 1\)"):
        fp8_linear(x, weight, scale_inv[:, :1], (32, 32))
    with pytest.raises(ValueError, match="weights must be contiguous"):
        fp8_linear(x, weight.T, scale_inv, (32, 32))
    with pytest.raises(ValueError, match="x has 32 features, the weight takes 64"):
        fp8_linear(torch.randn(1, 32), weight, scale_inv, (32, 32))
