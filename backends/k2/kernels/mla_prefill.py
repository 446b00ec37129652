"""MLA prefill attention on expanded keys and values, in Triton (flash-attention style).

A prefill of many new tokens is cheaper expanded than absorbed (see `model.absorbed_is_cheaper`):
kv_b turns each cached latent into per-head keys (`k_nope`) and values, and the rope key stays
shared by all heads: stored once per token, not copied into every head. Queries
go in blocks of rows for one head; keys stream through in blocks with an online softmax, and
the [queries, keys] scores never exist in memory.

Causality is by position: query row i sits at `query_first + i`, key j at `key_first + j`, and a
query sees keys at its own position or earlier. So the keys may be any slice of the context,
and the model expands a long context one slice at a time: each call returns its output and
log-sum-exp, and `merge_by_lse` folds the slices together exactly.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
LOG2E = 1.4426950408889634


@triton.jit
def _attend_block(
    acc, m_i, l_i, qn, qp, q_pos, kn_ptr, kp_ptr, v_ptr, n0, keys, key_first, nope, rope, v_dim, scale_log2,
    s_kn_t, s_kp_t, s_v_t,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr,
    CAUSAL: tl.constexpr, UPCAST: tl.constexpr,
):
    """One block of keys into the running softmax (m_i: the running max, in log2 units;
    l_i: the running sum of 2^(s - m_i)).
    CAUSAL: the block holds keys some rows must not see, or the slice's ragged end."""
    n = n0 + tl.arange(0, BLOCK_N)
    n_ok = n < keys
    rows = n[:, None].to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    r = tl.arange(0, BLOCK_R)
    e = tl.arange(0, BLOCK_V)
    kn = tl.load(kn_ptr + rows * s_kn_t + d[None, :], mask=n_ok[:, None] & (d < nope)[None, :], other=0.0)
    kp = tl.load(kp_ptr + rows * s_kp_t + r[None, :], mask=n_ok[:, None] & (r < rope)[None, :], other=0.0)
    v = tl.load(v_ptr + rows * s_v_t + e[None, :], mask=n_ok[:, None] & (e < v_dim)[None, :], other=0.0)
    if UPCAST:
        kn = kn.to(tl.float32)
        kp = kp.to(tl.float32)
        v = v.to(tl.float32)
    s = (tl.dot(qn, tl.trans(kn)) + tl.dot(qp, tl.trans(kp))) * scale_log2  # log2 units: exp2 below
    if CAUSAL:
        seen = ((key_first + n)[None, :] <= q_pos[:, None]) & n_ok[None, :]
        s = tl.where(seen, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    # A row with no visible key yet keeps m = -inf; subtracting 0 keeps its terms 0, not NaN.
    base = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - base)
    p = tl.exp2(s - base[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit
def _mla_prefill_kernel(
    qn_ptr, qp_ptr, kn_ptr, kp_ptr, v_ptr, out_ptr, lse_ptr,
    queries, keys, nope, rope, v_dim, query_first, key_first, scale_log2,
    s_qn_b, s_qn_t, s_qn_h, s_qp_b, s_qp_t, s_qp_h, s_kn_b, s_kn_t, s_kn_h, s_kp_b, s_kp_t,
    s_v_b, s_v_t, s_v_h, s_o_b, s_o_t, s_o_h, s_l_b, s_l_t,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_V: tl.constexpr, UPCAST: tl.constexpr,
):
    first_row = tl.program_id(0) * BLOCK_M
    h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)  # int64: b·stride passes 2³¹ for long contexts
    m = first_row + tl.arange(0, BLOCK_M)
    m_ok = m < queries
    d = tl.arange(0, BLOCK_D)
    r = tl.arange(0, BLOCK_R)
    e = tl.arange(0, BLOCK_V)
    qn = tl.load(qn_ptr + b * s_qn_b + m[:, None].to(tl.int64) * s_qn_t + h * s_qn_h + d[None, :],
                 mask=m_ok[:, None] & (d < nope)[None, :], other=0.0)
    qp = tl.load(qp_ptr + b * s_qp_b + m[:, None].to(tl.int64) * s_qp_t + h * s_qp_h + r[None, :],
                 mask=m_ok[:, None] & (r < rope)[None, :], other=0.0)
    if UPCAST:
        qn = qn.to(tl.float32)
        qp = qp.to(tl.float32)
    q_pos = query_first + m
    kn_ptr += b * s_kn_b + h * s_kn_h
    kp_ptr += b * s_kp_b
    v_ptr += b * s_v_b + h * s_v_h
    # Blocks every row sees whole (keys at or before the block's first query) need no mask;
    # keys past its last query are hidden from every row, so the loop stops before them.
    unmasked = tl.maximum(tl.minimum(keys, query_first + first_row - key_first + 1), 0) // BLOCK_N * BLOCK_N
    last_pos = query_first + tl.minimum(first_row + BLOCK_M, queries) - 1
    visible_keys = tl.minimum(keys, last_pos - key_first + 1)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_V), dtype=tl.float32)
    for n0 in range(0, unmasked, BLOCK_N):
        acc, m_i, l_i = _attend_block(acc, m_i, l_i, qn, qp, q_pos, kn_ptr, kp_ptr, v_ptr, n0, keys, key_first, nope, rope, v_dim,
                                      scale_log2, s_kn_t, s_kp_t, s_v_t, BLOCK_N, BLOCK_D, BLOCK_R, BLOCK_V, False, UPCAST)
    for n0 in range(unmasked, visible_keys, BLOCK_N):
        acc, m_i, l_i = _attend_block(acc, m_i, l_i, qn, qp, q_pos, kn_ptr, kp_ptr, v_ptr, n0, keys, key_first, nope, rope, v_dim,
                                      scale_log2, s_kn_t, s_kp_t, s_v_t, BLOCK_N, BLOCK_D, BLOCK_R, BLOCK_V, True, UPCAST)
    has = l_i > 0
    safe_l = tl.where(has, l_i, 1.0)
    out = acc / safe_l[:, None]
    lse = tl.where(has, (m_i + tl.log2(safe_l)) * 0.6931471805599453, float("-inf"))  # · ln 2: natural log
    tl.store(out_ptr + b * s_o_b + m[:, None].to(tl.int64) * s_o_t + h * s_o_h + e[None, :], out,
             mask=m_ok[:, None] & (e < v_dim)[None, :])
    tl.store(lse_ptr + b * s_l_b + m.to(tl.int64) * s_l_t + h, lse, mask=m_ok)


def _block(width: int) -> int:
    return max(16, triton.next_power_of_2(width))  # tl.dot takes no side under 16


def mla_prefill(
    q_nope: torch.Tensor,
    q_pe: torch.Tensor,
    k_nope: torch.Tensor,
    k_pe: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    query_first: int,
    key_first: int,
    *,
    block_m: int = 64,
    block_n: int = 64,
    num_warps: int = 4,
    num_stages: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(output [batch, queries, heads, v] fp32, log-sum-exp [batch, queries, heads] fp32).

    q_nope [batch, queries, heads, nope], q_pe [batch, queries, heads, rope]; k_nope [batch, keys,
    heads, nope], the shared k_pe [batch, keys, rope], v [batch, keys, heads, v]: any strides
    with the last dimension contiguous (the model passes views of kv_b's output). A query row
    that sees no key gets output 0 and log-sum-exp -inf, which `merge_by_lse` weighs as nothing."""
    batch, queries, heads, nope = q_nope.shape
    keys, rope, v_dim = k_nope.shape[1], q_pe.shape[-1], v.shape[-1]
    expected = {"q_pe": (batch, queries, heads, rope), "k_nope": (batch, keys, heads, nope), "k_pe": (batch, keys, rope),
                "v": (batch, keys, heads, v_dim)}
    for name, tensor in (("q_pe", q_pe), ("k_nope", k_nope), ("k_pe", k_pe), ("v", v)):
        if tuple(tensor.shape) != expected[name]:  # the kernel reads by these sizes: a mismatch would read out of bounds
            raise ValueError(f"mla_prefill: {name} has shape {list(tensor.shape)}, expected {list(expected[name])}")
    for name, tensor in (("q_nope", q_nope), ("q_pe", q_pe), ("k_nope", k_nope), ("k_pe", k_pe), ("v", v)):
        if tensor.stride(-1) != 1:
            raise ValueError(f"mla_prefill: {name}'s last dimension must be contiguous")
    out = torch.empty(batch, queries, heads, v_dim, dtype=torch.float32, device=q_nope.device)
    lse = torch.empty(batch, queries, heads, dtype=torch.float32, device=q_nope.device)
    _mla_prefill_kernel[(triton.cdiv(queries, block_m), heads, batch)](
        q_nope, q_pe, k_nope, k_pe, v, out, lse,
        queries, keys, nope, rope, v_dim, query_first, key_first, float(scale) * LOG2E,
        *q_nope.stride()[:3], *q_pe.stride()[:3], *k_nope.stride()[:3], *k_pe.stride()[:2],
        *v.stride()[:3], *out.stride()[:3], *lse.stride()[:2],
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=_block(nope), BLOCK_R=_block(rope), BLOCK_V=_block(v_dim),
        UPCAST=INTERPRET, num_warps=num_warps, num_stages=num_stages,
    )
    return out, lse


def mla_prefill_reference(
    q_nope: torch.Tensor,
    q_pe: torch.Tensor,
    k_nope: torch.Tensor,
    k_pe: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    query_first: int,
    key_first: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same in torch ops, in fp32 (inputs are upcast), scores in memory: [batch, heads,
    queries, keys] fp32, twice at the peak (the rope product before it is added). The CPU
    path calls it a slice of queries at a time. Heads lead, so each product is one batched
    matmul, and the scores are updated in place."""
    q_nope, q_pe, k_nope, v = (t.transpose(1, 2).float() for t in (q_nope, q_pe, k_nope, v))  # [batch, heads, tokens, width]
    scores = q_nope @ k_nope.transpose(-1, -2)
    scores += q_pe @ k_pe[:, None].float().transpose(-1, -2)
    scores *= scale
    queries, keys = q_nope.shape[2], k_nope.shape[2]
    if key_first + keys - 1 > query_first:  # some key lies after some query
        q_pos = torch.arange(query_first, query_first + queries, device=scores.device)
        k_pos = torch.arange(key_first, key_first + keys, device=scores.device)
        scores.masked_fill_(k_pos[None, :] > q_pos[:, None], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    scores.sub_(torch.where(lse.isinf(), 0.0, lse)[..., None]).exp_()  # probabilities; all-hidden rows: 0
    out = scores @ v
    return out.transpose(1, 2), lse.transpose(1, 2)


def merge_by_lse(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the union of two disjoint key sets, from each set's output and
    log-sum-exp (fp32). A side with lse -inf (no key visible) contributes nothing."""
    lse = torch.logaddexp(lse_a, lse_b)
    base = torch.where(lse.isinf(), 0.0, lse)
    out = out_a * torch.exp(lse_a - base)[..., None] + out_b * torch.exp(lse_b - base)[..., None]
    return out, lse

