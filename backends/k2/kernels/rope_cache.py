"""A decode step's rope and cache write in one launch (Triton).

Between the projections and attention, MLA decode has small jobs: rope on every head's query
tail, RMSNorm of the new latent, rope on the shared key, and both written to the cache at the
token's position. In torch ops that is about twenty launches of a few hundred bytes each.
Here program (b, h) ropes head h of row b's query in place; the last program of each row
normalises the latent, ropes the key and writes both cache rows. The torch reference is
`Attention.decode` with the kernels off.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rotate_pairs(src_ptr, dst_ptr, cos, sin, i, ok):
    """Interleaved rope: elements (2i, 2i+1) rotate together; computed in fp32, stored rounded."""
    even = tl.load(src_ptr + 2 * i, mask=ok, other=0.0).to(tl.float32)
    odd = tl.load(src_ptr + 2 * i + 1, mask=ok, other=0.0).to(tl.float32)
    tl.store(dst_ptr + 2 * i, (even * cos - odd * sin).to(dst_ptr.dtype.element_ty), mask=ok)
    tl.store(dst_ptr + 2 * i + 1, (odd * cos + even * sin).to(dst_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _rope_and_cache_kernel(
    q_ptr, kv_a_ptr, cos_ptr, sin_ptr, norm_ptr, positions_ptr, cache_kv_ptr, cache_pe_ptr,
    heads, nope, rank, half, eps,
    stride_qb, stride_qh, stride_ab, stride_cos, stride_kb, stride_kt, stride_pb, stride_pt,
    BLOCK_HALF: tl.constexpr, BLOCK_RANK: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    i = tl.arange(0, BLOCK_HALF)
    i_ok = i < half
    cos = tl.load(cos_ptr + b * stride_cos + i, mask=i_ok, other=0.0)
    sin = tl.load(sin_ptr + b * stride_cos + i, mask=i_ok, other=0.0)
    if h < heads:
        head = q_ptr + b * stride_qb + h * stride_qh + nope
        _rotate_pairs(head, head, cos, sin, i, i_ok)
    else:
        position = tl.load(positions_ptr + b)
        c = tl.arange(0, BLOCK_RANK)
        c_ok = c < rank
        latent = tl.load(kv_a_ptr + b * stride_ab + c, mask=c_ok, other=0.0).to(tl.float32)
        inv_rms = tl.rsqrt(tl.sum(latent * latent, axis=0) / rank + eps)
        weight = tl.load(norm_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        row = cache_kv_ptr + b * stride_kb + position * stride_kt
        tl.store(row + c, (latent * inv_rms * weight).to(cache_kv_ptr.dtype.element_ty), mask=c_ok)
        _rotate_pairs(kv_a_ptr + b * stride_ab + rank, cache_pe_ptr + b * stride_pb + position * stride_pt, cos, sin, i, i_ok)


def rope_and_cache(
    q: torch.Tensor, kv_a: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, norm_weight: torch.Tensor, eps: float,
    positions: torch.Tensor, cache_kv: torch.Tensor, cache_pe: torch.Tensor,
) -> None:
    """q [batch, heads, nope + rope]: its rope part roped in place. kv_a [batch, rank + rope]:
    the latent (normalised by norm_weight) and the shared key (roped) go to cache_kv and
    cache_pe [≥ batch, slots, ·] at `positions` [batch]. cos, sin: [batch, rope / 2]."""
    batch, heads, head_dim = q.shape
    rank, rope = cache_kv.shape[-1], cache_pe.shape[-1]
    expected = {"kv_a": (kv_a, (batch, rank + rope)), "cos": (cos, (batch, rope // 2)), "sin": (sin, (batch, rope // 2)),
                "norm_weight": (norm_weight, (rank,)), "positions": (positions, (batch,))}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {shape}")
    if head_dim <= rope or cache_kv.shape[:2] != cache_pe.shape[:2] or cache_kv.shape[0] < batch:
        raise ValueError(f"q {tuple(q.shape)} and caches {tuple(cache_kv.shape)}, {tuple(cache_pe.shape)} disagree")
    if any(t.stride(-1) != 1 for t in (q, kv_a, cos, sin, cache_kv, cache_pe)) or cos.stride() != sin.stride():
        raise ValueError("rope_and_cache needs rows whose elements are contiguous (and cos, sin alike)")
    if batch == 0:
        return
    _rope_and_cache_kernel[(batch, heads + 1)](
        q, kv_a, cos, sin, norm_weight, positions, cache_kv, cache_pe,
        heads, head_dim - rope, rank, rope // 2, eps,
        q.stride(0), q.stride(1), kv_a.stride(0), cos.stride(0),
        cache_kv.stride(0), cache_kv.stride(1), cache_pe.stride(0), cache_pe.stride(1),
        BLOCK_HALF=triton.next_power_of_2(rope // 2), BLOCK_RANK=triton.next_power_of_2(rank), num_warps=1 if rank <= 256 else 2,
    )
