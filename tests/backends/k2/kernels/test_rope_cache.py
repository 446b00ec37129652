"""The decode step's rope + latent norm + cache write kernel against the model's torch ops."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from kimicode.backends.k2.kernels.rope_cache import rope_and_cache  # noqa: E402
from kimicode.backends.k2.model import apply_rope, rms_norm_ops  # noqa: E402


def case(batch=3, heads=4, nope=16, rope=8, rank=40, slots=12, cache_batch=4, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(shape, generator=g).to(dtype)

    angles = torch.rand(batch, rope // 2, generator=g) * 6
    return dict(
        q=rand(batch, 1, heads, nope + rope)[:, 0], kv_a=rand(batch, 1, rank + rope)[:, 0],
        cos=angles.cos() * 1.1, sin=angles.sin() * 1.1, norm_weight=(1 + 0.2 * torch.randn(rank, generator=g)).to(dtype), eps=1e-6,
        positions=torch.randperm(slots, generator=g)[:batch], cache_kv=rand(cache_batch, slots, rank), cache_pe=rand(cache_batch, slots, rope),
    )


def reference(q, kv_a, cos, sin, norm_weight, eps, positions, cache_kv, cache_pe):
    """What `Attention.decode` does with the kernels off, on copies."""
    q, cache_kv, cache_pe = q.clone(), cache_kv.clone(), cache_pe.clone()
    rope = cache_pe.shape[-1]
    rank = cache_kv.shape[-1]
    q[..., -rope:] = apply_rope(q[:, None, :, -rope:], cos[:, None, None], sin[:, None, None])[:, 0]
    rows = torch.arange(q.shape[0])
    cache_kv[rows, positions] = rms_norm_ops(kv_a[:, :rank], norm_weight, eps)
    cache_pe[rows, positions] = apply_rope(kv_a[:, None, rank:], cos[:, None], sin[:, None])[:, 0]
    return q, cache_kv, cache_pe


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [{}, {"rope": 6, "rank": 33, "heads": 3}, {"batch": 1, "cache_batch": 1}], ids=["k2-like", "ragged", "one-row"])
def test_rope_and_cache_matches_the_torch_ops(shape, dtype):
    args = case(dtype=dtype, **shape)
    want_q, want_kv, want_pe = reference(**args)
    rope_and_cache(**args)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-2  # bf16: one rounding apart (the interpreter truncates)
    for got, want in ((args["q"], want_q), (args["cache_kv"], want_kv), (args["cache_pe"], want_pe)):
        assert float((got.float() - want.float()).abs().max() / want.float().abs().max()) < tolerance
    untouched = torch.ones(args["cache_kv"].shape[:2], dtype=torch.bool)
    untouched[torch.arange(len(args["positions"])), args["positions"]] = False
    assert torch.equal(args["cache_kv"][untouched], want_kv[untouched])  # every other slot, and rows past the batch, as they were
    assert torch.equal(args["cache_pe"][untouched], want_pe[untouched])
    assert torch.equal(args["q"][..., : -args["cache_pe"].shape[-1]], want_q[..., : -args["cache_pe"].shape[-1]])  # q_nope untouched


def test_the_rope_really_rotates_and_the_latent_is_normalised():
    args = case()
    before_q, before_kv = args["q"].clone(), args["kv_a"].clone()
    rope_and_cache(**args)
    assert not torch.equal(args["q"][..., -8:], before_q[..., -8:])
    written = args["cache_kv"][torch.arange(3), args["positions"]]
    assert not torch.allclose(written, before_kv[:, :40])
    assert torch.allclose((written / args["norm_weight"]).pow(2).mean(-1), torch.ones(3), atol=1e-4)


def test_shapes_that_disagree_are_refused_by_name():
    args = case()
    with pytest.raises(ValueError, match=r"kv_a has shape \(3, 40\), expected \(3, 48\)"):
        rope_and_cache(**{**args, "kv_a": args["kv_a"][:, :40]})
    with pytest.raises(ValueError, match=r"positions has shape \(2,\), expected \(3,\)"):
        rope_and_cache(**{**args, "positions": args["positions"][:2]})
    with pytest.raises(ValueError, match="disagree"):
        rope_and_cache(**{**args, "cache_pe": args["cache_pe"][:, :5]})
    with pytest.raises(ValueError, match="contiguous"):
        rope_and_cache(**{**args, "q": torch.randn(3, 24, 4).transpose(1, 2)})
