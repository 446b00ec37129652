"""RMSNorm kernel (and its residual-add form) against the model's torch ops, interpreted."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from kimicode.backends.k2.kernels.norm import rms_norm  # noqa: E402
from kimicode.backends.k2.model import rms_norm_ops  # noqa: E402


def random(shape, dtype=torch.float32, seed=0):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3 + 0.5).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 64), (3, 5, 100), (7, 1)])  # ragged widths; a 1-wide row
def test_rms_norm_matches_the_torch_ops(shape, dtype):
    x, weight = random(shape, dtype), random(shape[-1:], dtype, seed=1)
    got, want = rms_norm(x, weight, 1e-6), rms_norm_ops(x, weight, 1e-6)
    assert got.shape == x.shape and got.dtype == dtype
    tolerance = 1e-6 if dtype == torch.float32 else 8e-3  # bf16: one rounding of the output either way
    assert float((got.float() - want.float()).abs().max() / want.float().abs().max()) < tolerance


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_residual_form_normalises_the_rounded_sum(dtype):
    x, residual, weight = random((4, 96), dtype), random((4, 96), dtype, seed=2), random((96,), dtype, seed=3)
    normed, summed = rms_norm(x, weight, 1e-5, residual)
    if dtype == torch.float32:
        assert torch.equal(summed, x + residual)  # exactly the residual stream the torch ops hold
    else:  # Triton's interpreter rounds fp32 to bf16 toward zero (GPUs to nearest): one ulp apart at most
        assert torch.allclose(summed.float(), (x + residual).float(), rtol=2**-7, atol=0)
    want = rms_norm_ops(x + residual, weight, 1e-5)
    assert float((normed.float() - want.float()).abs().max() / want.float().abs().max()) < (1e-6 if dtype == torch.float32 else 8e-3)
    assert not torch.equal(normed, rms_norm(x, weight, 1e-5))  # the residual was really added


def test_a_column_slice_is_read_at_its_row_stride():
    """kv_a's output holds the latent and the rope key side by side: the norm reads the first part."""
    packed = random((2, 3, 40 + 8))
    latent = packed[..., :40]
    weight = random((40,), seed=4)
    got = rms_norm(latent, weight, 1e-6)
    assert float((got - rms_norm_ops(latent.contiguous(), weight, 1e-6)).abs().max()) < 1e-5


def test_no_rows_is_no_launch():
    assert rms_norm(torch.empty(0, 64), torch.ones(64), 1e-6).shape == (0, 64)


def test_mismatched_shapes_are_refused_with_names():
    with pytest.raises(ValueError, match=r"weight of shape \(32,\) does not match rows of 64"):
        rms_norm(torch.randn(2, 64), torch.ones(32), 1e-6)
    with pytest.raises(ValueError, match=r"residual of shape \(2, 32\) does not match x \(2, 64\)"):
        rms_norm(torch.randn(2, 64), torch.ones(64), 1e-6, torch.randn(2, 32))
    with pytest.raises(ValueError, match="contiguous"):
        rms_norm(torch.randn(64, 2).T, torch.ones(64), 1e-6)


def test_eps_counts_for_a_row_of_small_values():
    x, weight = random((2, 64)) * 1e-3, random((64,), seed=5)
    got = rms_norm(x, weight, 1e-4)
    assert float((got - rms_norm_ops(x, weight, 1e-4)).abs().max() / got.abs().max()) < 1e-6
    assert float((got - rms_norm_ops(x, weight, 0.0)).abs().max() / got.abs().max()) > 0.5
