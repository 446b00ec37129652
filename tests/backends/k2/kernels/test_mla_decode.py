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


@pytest.mark.parametrize("split_len", [16, 64])
def test_several_new_tokens_each_see_the_cache_up_to_their_own_position(split_len):
    """A short turn by the absorbed path: 6 queries per sequence, the last at `lengths`."""
    g = torch.Generator().manual_seed(3)
    q, qp = torch.randn(2, 6, 5, 32, generator=g), torch.randn(2, 6, 5, 8, generator=g)
    kv, pe = torch.randn(2, 90, 32, generator=g), torch.randn(2, 90, 8, generator=g)
    lengths = torch.tensor([90, 6], dtype=torch.int32)  # the second: the turn is the whole sequence
    out = mla_decode(q, qp, kv, pe, lengths, 0.13, split_len=split_len, block_t=16, block_h=4)
    expected = mla_decode_reference(q, qp, kv, pe, lengths, 0.13)
    assert out.shape == (2, 6, 5, 32)
    assert float((out - expected).abs().max()) < 1e-5
    assert torch.allclose(out[1, 0], kv[1, :1].expand(5, 32), atol=1e-6)  # its first token sees only itself
    # each token's row differs from the one computed with the whole cache visible
    whole = mla_decode(q[:, 0], qp[:, 0], kv, pe, lengths, 0.13, split_len=split_len, block_t=16, block_h=4)
    assert float((out[0, 0] - whole[0]).abs().max()) > 1e-3


def test_a_long_turn_takes_longer_splits_within_the_partials_budget(monkeypatch):
    import kimicode.backends.k2.kernels.mla_decode as mla

    g = torch.Generator().manual_seed(4)
    q, qp = torch.randn(1, 7, 3, 16, generator=g), torch.randn(1, 7, 3, 8, generator=g)
    kv, pe = torch.randn(1, 200, 16, generator=g), torch.randn(1, 200, 8, generator=g)
    lengths = torch.tensor([150], dtype=torch.int32)
    assert mla.split_length(65536, 64 * 512 * 4, 128, 64) == 128  # one decode token at K2's shape, batch 1
    assert mla.split_length(131072, 32 * 64 * 512 * 4, 128, 64) == 2048  # batch 32: 256 MiB of partials, not 4 GiB
    assert mla.split_length(65536, 180 * 64 * 512 * 4, 128, 64) == 6016  # a 180-token turn: 11 splits
    monkeypatch.setattr(mla, "PARTIALS_BUDGET", 7 * 3 * 16 * 4 * 3)  # room for 3 splits' partials
    assert mla.split_length(200, 7 * 3 * 16 * 4, 16, 16) == 80  # 3 splits of 80 slots, not 13 of 16
    out = mla.mla_decode(q, qp, kv, pe, lengths, 0.2, split_len=16, block_t=16, block_h=2)
    assert float((out - mla_decode_reference(q, qp, kv, pe, lengths, 0.2)).abs().max()) < 1e-5


def test_token_lengths_on_split_boundaries():
    """Tokens that see 31..34 keys with splits of 16: the last ones end exactly on a split
    boundary, where reading one split too many or too few in the combine shows."""
    g = torch.Generator().manual_seed(5)
    q, qp = torch.randn(1, 4, 3, 16, generator=g), torch.randn(1, 4, 3, 8, generator=g)
    kv, pe = torch.randn(1, 48, 16, generator=g), torch.randn(1, 48, 8, generator=g)
    lengths = torch.tensor([34], dtype=torch.int32)
    out = mla_decode(q, qp, kv, pe, lengths, 0.2, split_len=16, block_t=16, block_h=2)
    assert float((out - mla_decode_reference(q, qp, kv, pe, lengths, 0.2)).abs().max()) < 1e-5


def test_the_reference_refuses_a_length_shorter_than_the_turn():
    q, qp, kv, pe = torch.zeros(1, 4, 2, 16), torch.zeros(1, 4, 2, 8), torch.zeros(1, 8, 16), torch.zeros(1, 8, 8)
    with pytest.raises(ValueError, match="length 2 is shorter than its 4 new tokens"):
        mla_decode_reference(q, qp, kv, pe, torch.tensor([2]), 0.2)
