"""MLA decode kernel against its torch reference (Triton's interpreter on the CPU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from kimicode.backends.k2.kernels.mla_decode import mla_decode, mla_decode_reference  # noqa: E402


def inputs(batch, heads, latent, rope, capacity, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, latent, generator=g), torch.randn(batch, heads, rope, generator=g),
            torch.randn(batch, capacity, latent, generator=g), torch.randn(batch, capacity, rope, generator=g))


@pytest.mark.parametrize("split_len", [16, 48, 256])
def test_split_sequence_decode_matches_the_reference(split_len):
    q, qp, kv, pe = inputs(2, 5, 32, 8, 200)
    lengths = torch.tensor([200, 37], dtype=torch.int32)  # ragged: the second sequence is shorter
    out = mla_decode(q, qp, kv, pe, lengths, 0.13, split_len=split_len, block_t=16, block_h=4)
    expected = mla_decode_reference(q, qp, kv, pe, lengths, 0.13)
    assert float((out - expected).abs().max()) < 1e-5


def test_uneven_latent_and_rope_widths_and_a_single_token():
    q, qp, kv, pe = inputs(1, 3, 24, 6, 50, seed=1)  # widths that are not powers of two
    lengths = torch.tensor([1], dtype=torch.int32)  # only the new token itself
    out = mla_decode(q, qp, kv, pe, lengths, 0.2, split_len=16, block_t=16, block_h=2)
    assert torch.allclose(out, kv[:, :1].expand(1, 3, 24), atol=1e-6)  # softmax over one key is 1


def test_the_model_decode_step_matches_through_the_kernel():
    """The attention module's absorbed math, with the kernel in place of its einsums."""
    q, qp, kv, pe = inputs(1, 4, 16, 8, 64, seed=2)
    lengths = torch.tensor([64], dtype=torch.int32)
    scores = torch.einsum("bhc,btc->bht", q, kv) + torch.einsum("bhr,btr->bht", qp, pe)
    expected = torch.einsum("bht,btc->bhc", (scores * 0.1).softmax(-1), kv)
    out = mla_decode(q, qp, kv, pe, lengths, 0.1, split_len=32, block_t=16, block_h=4)
    assert float((out - expected).abs().max()) < 1e-5
