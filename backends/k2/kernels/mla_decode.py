"""MLA decode attention on the compressed cache, in Triton (absorbed weights).

The query arrives already folded with kv_b's key half (`q_latent`, [batch, heads, kv_lora])
plus its rope part; keys and values are the cached latent itself and the shared rope key,
so every head reads the same 576 values per token (K2) and the cache is read once per
step for all heads. The sequence is split across programs (split-K, flash-decoding
style): each split writes a normalised partial and its log-sum-exp, and a second kernel
merges the live ones. Lengths are read on the device, so a captured CUDA graph serves every step.

The same kernels serve a short turn of several new tokens (absorbed attention is the cheaper
path below ≈180 of them for K2): query t of T sees the cache up to its own position, and the
programs of all T tokens over one split read the same stretch of cache, so it is read from
memory about once while the [tokens, heads, keys] scores never exist.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _mla_decode_kernel(
    q_ptr, qpe_ptr, kv_ptr, pe_ptr, lengths_ptr, out_ptr, lse_ptr,
    tokens, heads, latent, rope, split_len, scale,
    stride_qb, stride_qt, stride_qh, stride_pb, stride_pt, stride_ph, stride_kb, stride_kt, stride_eb, stride_et,
    stride_ob, stride_os, stride_ot, stride_oh, stride_lb, stride_ls, stride_lt,
    BLOCK_H: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr, UPCAST: tl.constexpr,
):
    # Axis 0 (tokens × head blocks, no 65,535 limit) runs fastest: neighbouring programs read
    # the same stretch of cache, which stays in L2 for all of them.
    head_blocks = tl.cdiv(heads, BLOCK_H)
    token = tl.program_id(0) // head_blocks
    b = tl.program_id(1).to(tl.int64)  # int64: b·stride passes 2³¹ at batch 32 with a 128K cache
    split = tl.program_id(2)
    length = tl.load(lengths_ptr + b) - (tokens - 1 - token)  # lengths count up to the last token
    start = split * split_len
    if start >= length:  # past this query's position: nothing to write, the combine never reads it
        return
    end = tl.minimum(start + split_len, length)
    h = (tl.program_id(0) % head_blocks) * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = h < heads
    c = tl.arange(0, BLOCK_C)
    c_ok = c < latent
    r = tl.arange(0, BLOCK_R)
    r_ok = r < rope
    q_ptr += b * stride_qb + token * stride_qt
    qpe_ptr += b * stride_pb + token * stride_pt
    q = tl.load(q_ptr + h[:, None] * stride_qh + c[None, :], mask=h_ok[:, None] & c_ok[None, :], other=0.0)
    qp = tl.load(qpe_ptr + h[:, None] * stride_ph + r[None, :], mask=h_ok[:, None] & r_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
        qp = qp.to(tl.float32)
    m = tl.full((BLOCK_H,), float("-inf"), dtype=tl.float32)
    l = tl.zeros((BLOCK_H,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_H, BLOCK_C), dtype=tl.float32)
    for t0 in range(start, end, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        t_ok = t < end
        k = tl.load(kv_ptr + b * stride_kb + t[:, None] * stride_kt + c[None, :], mask=t_ok[:, None] & c_ok[None, :], other=0.0)
        kp = tl.load(pe_ptr + b * stride_eb + t[:, None] * stride_et + r[None, :], mask=t_ok[:, None] & r_ok[None, :], other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            kp = kp.to(tl.float32)
        s = (tl.dot(q, tl.trans(k)) + tl.dot(qp, tl.trans(kp))) * scale
        s = tl.where(t_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(k.dtype), k)
        m = m_new
    has = l > 0
    out = acc / tl.where(has, l, 1.0)[:, None]
    lse = tl.where(has, m + tl.log(tl.where(has, l, 1.0)), float("-inf"))
    tl.store(out_ptr + b * stride_ob + split * stride_os + token * stride_ot + h[:, None] * stride_oh + c[None, :], out,
             mask=h_ok[:, None] & c_ok[None, :])
    tl.store(lse_ptr + b * stride_lb + split * stride_ls + token * stride_lt + h, lse, mask=h_ok)


@triton.jit
def _combine_kernel(
    part_ptr, lse_ptr, lengths_ptr, out_ptr, tokens, heads, split_len, latent,
    stride_pb, stride_ps, stride_pt, stride_ph, stride_lb, stride_ls, stride_lt, stride_ob, stride_ot, stride_oh,
    BLOCK_C: tl.constexpr,
):
    """Merge the live splits of one (sequence, token, head) by their log-sum-exp; reads only
    the splits that hold tokens, so a large cache costs nothing at a short length."""
    token = tl.program_id(0) // heads
    h = tl.program_id(0) % heads
    b = tl.program_id(1).to(tl.int64)
    live = tl.cdiv(tl.load(lengths_ptr + b) - (tokens - 1 - token), split_len)
    part_ptr += token * stride_pt
    lse_ptr += token * stride_lt
    out_ptr += token * stride_ot
    c = tl.arange(0, BLOCK_C)
    c_ok = c < latent
    m = float("-inf")
    total = 0.0
    acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for split in range(0, live):
        lse = tl.load(lse_ptr + b * stride_lb + split * stride_ls + h)
        part = tl.load(part_ptr + b * stride_pb + split * stride_ps + h * stride_ph + c, mask=c_ok, other=0.0)
        m_new = tl.maximum(m, lse)
        alpha = tl.exp(m - m_new)
        weight = tl.exp(lse - m_new)
        acc = acc * alpha + weight * part
        total = total * alpha + weight
        m = m_new
    tl.store(out_ptr + b * stride_ob + h * stride_oh + c, acc / total, mask=c_ok)


PARTIALS_BUDGET = 256 * 1024**2  # bytes of fp32 split partials one launch may hold


def split_length(capacity: int, bytes_per_split: int, split_len: int, block_t: int) -> int:
    """Cache slots per split: at least `split_len`, more when that many splits' partials would
    pass PARTIALS_BUDGET (one split when even one passes it); a multiple of `block_t`."""
    split_len = max(split_len, triton.cdiv(capacity, max(1, PARTIALS_BUDGET // bytes_per_split)))
    return triton.cdiv(split_len, block_t) * block_t


def mla_decode(
    q_latent: torch.Tensor,
    q_pe: torch.Tensor,
    kv_cache: torch.Tensor,
    pe_cache: torch.Tensor,
    lengths: torch.Tensor,
    scale: float,
    *,
    split_len: int = 128,
    block_t: int = 64,
    block_h: int = 16,
    num_warps: int = 4,
    num_stages: int = 2,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Attention output in latent space (fp32): [batch, heads, kv_lora] for one new token per
    sequence (q_latent [batch, heads, kv_lora], q_pe [batch, heads, rope]), or [batch, tokens,
    heads, kv_lora] for the last `tokens` positions of each sequence (q_latent [batch, tokens,
    heads, kv_lora]; token t sees the cache up to length - tokens + t + 1). kv_cache [batch,
    capacity, kv_lora], pe_cache [batch, capacity, rope]; lengths [batch] int32: cached tokens
    to attend to, the new ones included, at least `tokens` (each query sees its own key).
    The output is written in `out_dtype` (partials stay fp32), so no conversion follows.

    The grid covers the whole capacity (the lengths live on the GPU); programs past a
    query's length return at once. `split_len` tokens per program: at 4K tokens and 64
    heads that is 128 programs, at 32K a thousand. Splits lengthen when their fp32 partials
    would pass PARTIALS_BUDGET: for several tokens, and for one token at a large batch with
    a long cache (batch 32, 128K slots: 2,048 per split, not 128). Two pipeline stages take 92 KiB of shared
    memory: it fits the 99 KiB of sm_86/89 and A100's 163 KiB, and two blocks share an H100 SM
    (Triton's default of three takes 164 KiB: one block per H100 SM, and no launch elsewhere;
    `kimicode bench ptxas` reports each)."""
    one_token = q_latent.dim() == 3
    if one_token:
        q_latent, q_pe = q_latent[:, None], q_pe[:, None]
    batch, tokens, heads, latent = q_latent.shape
    rope = q_pe.shape[-1]
    capacity = kv_cache.shape[1]
    split_len = split_length(capacity, batch * tokens * heads * latent * 4, split_len, block_t)
    splits = triton.cdiv(capacity, split_len)
    lengths = lengths.to(torch.int32)
    # one split's partial is already the output
    partials = torch.empty(batch, splits, tokens, heads, latent, dtype=torch.float32 if splits > 1 else out_dtype, device=q_latent.device)
    lse = torch.empty(batch, splits, tokens, heads, dtype=torch.float32, device=q_latent.device)
    _mla_decode_kernel[(tokens * triton.cdiv(heads, block_h), batch, splits)](
        q_latent, q_pe, kv_cache, pe_cache, lengths, partials, lse,
        tokens, heads, latent, rope, split_len, float(scale),
        *q_latent.stride()[:3], *q_pe.stride()[:3],
        kv_cache.stride(0), kv_cache.stride(1), pe_cache.stride(0), pe_cache.stride(1),
        *partials.stride()[:4], *lse.stride()[:3],
        BLOCK_H=block_h, BLOCK_T=block_t, BLOCK_C=triton.next_power_of_2(latent),
        BLOCK_R=triton.next_power_of_2(rope), UPCAST=INTERPRET, num_warps=num_warps, num_stages=num_stages,
    )
    if splits == 1:  # each partial is already normalised
        out = partials[:, 0]
        return out[:, 0] if one_token else out
    out = torch.empty(batch, tokens, heads, latent, dtype=out_dtype, device=q_latent.device)
    _combine_kernel[(tokens * heads, batch)](
        partials, lse, lengths, out, tokens, heads, split_len, latent,
        partials.stride(0), partials.stride(1), partials.stride(2), partials.stride(3), lse.stride(0), lse.stride(1),
        lse.stride(2), out.stride(0), out.stride(1), out.stride(2), BLOCK_C=triton.next_power_of_2(latent),
    )
    return out[:, 0] if one_token else out


def mla_decode_reference(
    q_latent: torch.Tensor, q_pe: torch.Tensor, kv_cache: torch.Tensor, pe_cache: torch.Tensor, lengths: torch.Tensor, scale: float
) -> torch.Tensor:
    """The same in torch ops, one query at a time; shapes as `mla_decode`'s."""
    one_token = q_latent.dim() == 3
    if one_token:
        q_latent, q_pe = q_latent[:, None], q_pe[:, None]
    tokens = q_latent.shape[1]
    outputs = []
    for b, length in enumerate(lengths.tolist()):
        if length < tokens:
            raise ValueError(f"sequence {b}: length {length} is shorter than its {tokens} new tokens")
        rows = []
        for t in range(tokens):
            seen = length - tokens + t + 1
            kv, pe = kv_cache[b, :seen].float(), pe_cache[b, :seen].float()
            scores = (q_latent[b, t].float() @ kv.T + q_pe[b, t].float() @ pe.T) * scale
            rows.append(scores.softmax(-1) @ kv)
        outputs.append(torch.stack(rows))
    out = torch.stack(outputs)
    return out[:, 0] if one_token else out
