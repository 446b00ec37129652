"""MLA prefill kernel against its torch reference (Triton's interpreter on the CPU), and the
reference against PyTorch's own attention."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402

from kimicode.backends.k2.kernels.mla_prefill import merge_by_lse, mla_prefill, mla_prefill_reference  # noqa: E402

TILES = dict(block_m=16, block_n=16)


def inputs(batch, queries, keys, heads, nope, rope, v_dim, seed=0, dtype=torch.float32):
    """Views the way the model makes them: q split from one projection, k_nope and v from kv_b's output."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, queries, heads, nope + rope, generator=g).to(dtype)
    kv = torch.randn(batch, keys, heads, nope + v_dim, generator=g).to(dtype)
    k_pe = torch.randn(batch, keys, rope, generator=g).to(dtype)
    q_nope, q_pe = q.split([nope, rope], dim=-1)
    k_nope, v = kv.split([nope, v_dim], dim=-1)
    return q_nope, q_pe, k_nope, k_pe, v


def max_error(got, want):
    return float((got - want).abs().max())


def test_the_reference_is_pytorchs_causal_attention():
    q_nope, q_pe, k_nope, k_pe, v = inputs(2, 30, 30, 3, 16, 8, 16)
    out, lse = mla_prefill_reference(q_nope, q_pe, k_nope, k_pe, v, 0.2, 0, 0)
    queries = torch.cat((q_nope, q_pe), -1).transpose(1, 2)
    keys = torch.cat((k_nope, k_pe[:, :, None].expand(-1, -1, 3, -1)), -1).transpose(1, 2)
    want = F.scaled_dot_product_attention(queries, keys, v.transpose(1, 2), is_causal=True, scale=0.2).transpose(1, 2)
    assert max_error(out, want) < 1e-5
    scores = (queries @ keys.transpose(-1, -2)) * 0.2
    scores = scores.masked_fill(torch.ones(30, 30, dtype=torch.bool).triu(1), float("-inf"))
    assert max_error(lse, scores.logsumexp(-1).transpose(1, 2)) < 1e-5


@pytest.mark.parametrize(
    ("queries", "keys", "query_first", "key_first"),
    [
        (37, 37, 0, 0),  # a prefill from position 0: plain causal, ragged last block
        (37, 87, 50, 0),  # 37 new tokens after 50 cached ones: lower-right causal
        (20, 40, 100, 0),  # a slice of the cache wholly before the queries: nothing hidden
        (33, 48, 10, 30),  # a slice that starts after some queries: their rows see nothing
        # query_first - key_first ≡ block - 2: a mask-free bound one key too far would let the
        # first row of each block see its next key
        (40, 54, 14, 0),
        (33, 80, 30, 0),
        (20, 20, 5, 5),  # the slice starts at the first query: row 0 sees only its own key
    ],
)
def test_the_kernel_matches_the_reference(queries, keys, query_first, key_first):
    args = inputs(2, queries, keys, 3, 16, 8, 16, seed=queries + keys)
    out, lse = mla_prefill(*args, 0.17, query_first, key_first, **TILES)
    want_out, want_lse = mla_prefill_reference(*args, 0.17, query_first, key_first)
    assert torch.equal(lse.isinf(), want_lse.isinf())
    assert max_error(out, want_out) < 1e-5
    seen = ~want_lse.isinf()
    assert max_error(lse[seen], want_lse[seen]) < 1e-5
    if key_first == query_first:
        assert torch.allclose(out[:, 0], args[4][:, 0].float(), atol=1e-6)
    if key_first > query_first:
        assert bool(lse[:, : key_first - query_first].isinf().all()) and not bool(out[:, : key_first - query_first].any())


def test_uneven_widths_and_one_query_per_block():
    args = inputs(1, 9, 9, 2, 12, 6, 10, seed=5)  # not powers of two: padded and masked
    out, lse = mla_prefill(*args, 0.3, 0, 0, block_m=16, block_n=16)
    want_out, want_lse = mla_prefill_reference(*args, 0.3, 0, 0)
    assert max_error(out, want_out) < 1e-5 and max_error(lse, want_lse) < 1e-5
    assert torch.allclose(out[:, 0], args[4][:, 0].float(), atol=1e-6)  # the first token sees only itself


def test_bf16_inputs():
    args = inputs(1, 40, 40, 2, 16, 16, 16, seed=6, dtype=torch.bfloat16)
    out, lse = mla_prefill(*args, 0.15, 0, 0, **TILES)
    want_out, want_lse = mla_prefill_reference(*(a.float() for a in args), 0.15, 0, 0)
    assert max_error(out, want_out) < 1e-4 and max_error(lse, want_lse) < 1e-4


def test_slices_merged_by_lse_equal_the_whole_context():
    """The model's long-context path: the cache expanded a slice at a time, attended, merged."""
    q_nope, q_pe, k_nope, k_pe, v = inputs(2, 25, 90, 3, 16, 8, 16, seed=7)
    query_first = 65  # the queries are the last 25 of the 90 keys
    want_out, want_lse = mla_prefill_reference(q_nope, q_pe, k_nope, k_pe, v, 0.2, query_first, 0)
    out = lse = None
    for first in range(0, 90, 32):  # slices of 32, 32 and 26 keys
        part = slice(first, first + 32)
        got = mla_prefill(q_nope, q_pe, k_nope[:, part], k_pe[:, part], v[:, part], 0.2, query_first, first, **TILES)
        out, lse = got if out is None else merge_by_lse(out, lse, *got)
    assert max_error(out, want_out) < 1e-5 and max_error(lse, want_lse) < 1e-5


def test_merging_with_a_slice_that_sees_nothing_changes_nothing():
    g = torch.Generator().manual_seed(8)
    out, lse = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, generator=g)
    empty_lse = torch.full_like(lse, float("-inf"))
    merged, merged_lse = merge_by_lse(out, lse, torch.zeros_like(out), empty_lse)
    assert torch.allclose(merged, out) and torch.allclose(merged_lse, lse)
    both_empty, both_lse = merge_by_lse(torch.zeros_like(out), empty_lse, torch.zeros_like(out), empty_lse)
    assert not bool(both_empty.isnan().any()) and bool(both_lse.isinf().all())


def test_a_non_contiguous_last_dimension_is_refused():
    q_nope, q_pe, k_nope, k_pe, v = inputs(1, 4, 4, 2, 16, 16, 16)
    with pytest.raises(ValueError, match="k_nope's last dimension"):
        mla_prefill(q_nope, q_pe, torch.randn(1, 4, 2, 32)[..., ::2], k_pe, v, 0.2, 0, 0)  # right shape, stride 2


def test_mismatched_shapes_are_refused_before_the_launch():
    q_nope, q_pe, k_nope, k_pe, v = inputs(1, 4, 6, 2, 16, 16, 16)
    with pytest.raises(ValueError, match=r"k_pe has shape \[1, 5, 16\], expected \[1, 6, 16\]"):
        mla_prefill(q_nope, q_pe, k_nope, k_pe[:, :5], v, 0.2, 0, 0)
    with pytest.raises(ValueError, match="v has shape"):
        mla_prefill(q_nope, q_pe, k_nope, k_pe, v[:, :, :1], 0.2, 0, 0)
