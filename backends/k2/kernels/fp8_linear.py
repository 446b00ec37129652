"""Linear layers with block-FP8 weights, dequantised inside the GEMM (Triton); and a SwiGLU
pair (gate and up in one launch, silu·up in the epilogue) for FP8 or bf16 weights.

K2's attention, shared-expert and dense weights ship as e4m3 with one fp32 scale per
128x128 block; after the routed experts they are the largest bytes a decode step reads.
Keeping them FP8 in memory halves those bytes against bf16: each K step loads an FP8
tile, scales it by its block's factor in registers and feeds the tensor cores in bf16.

The bytes are decoded with integer ops, not Triton's fp8 type, which it supports only from
sm_89: e4m3 shifted into fp16's bit layout is exact (3 mantissa bits fit in 10, subnormals
included) once scaled by 2^(15-7), so the same kernel runs on A100s and A10s too.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from kimicode.backends.k2.quant import dequantize_fp8_block

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
TARGET_PROGRAMS = 264


@triton.jit
def e4m3_to_float(byte):
    """e4m3fn bytes (uint8) as fp32: sign to bit 15, exponent and mantissa to bits 14..7 of an
    fp16, whose exponent bias (15) exceeds e4m3's (7) by 8. NaN (0x7F) would read as 480."""
    bits = byte.to(tl.uint16)
    half = ((bits & 0x80) << 8) | ((bits & 0x7F) << 7)
    return half.to(tl.float16, bitcast=True).to(tl.float32) * 256.0


@triton.jit
def _fp8_dot(x_ptr, w_ptr, s_ptr, m, n, m_ok, n_ok, k_start, k_end, stride_x, stride_w, scale_cols,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SCALE_BLOCK_N: tl.constexpr,
             UPCAST: tl.constexpr, FP8: tl.constexpr):
    """x[m, k_start:k_end] · dequant(W[n, k_start:k_end])ᵀ in fp32. BLOCK_K is the scale block:
    one factor per row of a weight tile. Without FP8, W is read as it is stored."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < k_end
        a = tl.load(x_ptr + m[:, None] * stride_x + k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + n[:, None] * stride_w + k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        if FP8:
            factor = tl.load(s_ptr + (n // SCALE_BLOCK_N) * scale_cols + k0 // BLOCK_K, mask=n_ok, other=0.0)
            w = e4m3_to_float(w) * factor[:, None]
        if UPCAST:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        else:
            w = w.to(a.dtype)
        acc += tl.dot(a, tl.trans(w))
    return acc


@triton.jit
def _fp8_linear_kernel(
    x_ptr, w_ptr, s_ptr, up_ptr, up_s_ptr, out_ptr, partial_ptr, arrivals_ptr,
    rows, out_features, in_features, scale_cols, k_per_split,
    stride_x, stride_w, stride_out,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SCALE_BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr, SPLIT_K: tl.constexpr, SWIGLU: tl.constexpr, FP8: tl.constexpr,
):
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = m < rows
    n_ok = n < out_features
    ok = m_ok[:, None] & n_ok[None, :]
    k_start = tl.program_id(2) * k_per_split
    k_end = tl.minimum(k_start + k_per_split, in_features)
    acc = _fp8_dot(x_ptr, w_ptr, s_ptr, m, n, m_ok, n_ok, k_start, k_end, stride_x, stride_w, scale_cols,
                   BLOCK_M, BLOCK_N, BLOCK_K, SCALE_BLOCK_N, UPCAST, FP8)
    up = acc  # read only with SWIGLU
    if SWIGLU:  # the up projection on the same rows of x and W: silu(gate) · up in the epilogue
        up = _fp8_dot(x_ptr, up_ptr, up_s_ptr, m, n, m_ok, n_ok, k_start, k_end, stride_x, stride_w, scale_cols,
                      BLOCK_M, BLOCK_N, BLOCK_K, SCALE_BLOCK_N, UPCAST, FP8)
    if SPLIT_K:
        # Each K range stores its partial; the last program of the tile to arrive sums them in
        # split order (the same result every run, unlike atomic adds) and writes the output, so
        # the linear stays one launch with no zeroed buffer and no conversion after it.
        splits = tl.num_programs(2)
        plane = rows * out_features
        partial_ptr += m[:, None] * out_features + n[None, :]
        first = tl.program_id(2) * (2 if SWIGLU else 1)
        tl.store(partial_ptr + first * plane, acc, mask=ok)
        if SWIGLU:
            tl.store(partial_ptr + (first + 1) * plane, up, mask=ok)
        tl.debug_barrier()  # all of this program's partial is written before its arrival is counted
        tile = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
        if tl.atomic_add(arrivals_ptr + tile, 1, sem="acq_rel") == splits - 1:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for split in range(0, splits):
                at = split * (2 if SWIGLU else 1)
                acc += tl.load(partial_ptr + at * plane, mask=ok, other=0.0, cache_modifier=".cg")
                if SWIGLU:
                    up += tl.load(partial_ptr + (at + 1) * plane, mask=ok, other=0.0, cache_modifier=".cg")
            tl.atomic_xchg(arrivals_ptr + tile, 0)  # ready for the next launch (and graph replay)
            _store_output(out_ptr, acc, up, m, n, ok, stride_out, SWIGLU)
    else:
        _store_output(out_ptr, acc, up, m, n, ok, stride_out, SWIGLU)


@triton.jit
def _store_output(out_ptr, acc, up, m, n, ok, stride_out, SWIGLU: tl.constexpr):
    if SWIGLU:
        acc = acc / (1.0 + tl.exp(-acc)) * up
    tl.store(out_ptr + m[:, None] * stride_out + n[None, :], acc.to(out_ptr.dtype.element_ty), mask=ok)


def fp8_linear(
    x: torch.Tensor, weight: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = (128, 128),
    *, block_m: int | None = None, block_n: int | None = None, splits: int | None = None,
) -> torch.Tensor:
    """x [..., in] · dequant(weight [out, in] e4m3, scale_inv [out/bn, in/bk])ᵀ -> [..., out] in x.dtype."""
    return _launch(x, [(weight, scale_inv)], block, block_m, block_n, splits)


Projection = tuple[torch.Tensor, "torch.Tensor | None"]  # (e4m3 weight, scale_inv), or (weight in x's dtype, None)


def swiglu(
    x: torch.Tensor, gate: Projection, up: Projection,
    block: tuple[int, int] = (128, 128), *, block_m: int | None = None, block_n: int | None = None, splits: int | None = None,
) -> torch.Tensor:
    """silu(x · gateᵀ) · (x · upᵀ): a SwiGLU MLP's first half in one launch, gate and up never
    written out. Both projections of one shape and format; a bf16 pair tiles K by block[1]."""
    if gate[0].shape != up[0].shape or gate[0].dtype != up[0].dtype or (gate[1] is None) != (up[1] is None):
        raise ValueError(f"gate {tuple(gate[0].shape)} {gate[0].dtype} and up {tuple(up[0].shape)} {up[0].dtype} "
                         "projections must have one shape and format")
    if gate[1] is None and gate[0].dtype != x.dtype:
        raise ValueError(f"unquantised weights must be in x's dtype {x.dtype}, not {gate[0].dtype}")
    return _launch(x, [gate, up], block, block_m, block_n, splits)


def _launch(x, projections, block, block_m, block_n, splits) -> torch.Tensor:
    weight, scale_inv = projections[0]
    up, up_scale = projections[-1]
    fp8 = scale_inv is not None
    check_projections(x, projections, block)
    if not fp8:  # a pointer never read, and no scale columns
        scale_inv, up_scale = weight, up
    rows = x.numel() // x.shape[-1]
    flat = x.reshape(rows, x.shape[-1])
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    out_features, in_features = weight.shape
    if block_m is None:  # decode: few rows, so small M tiles and many N programs to stream the weight
        block_m = 16 if rows <= 16 else 64
    # Prefill tiles dequantise a 128x128 weight tile per step: over 8 warps it takes 107 registers
    # on sm_90 (175 over 4) and none spill on sm_80/89 (4 warps spill there); see `kimicode bench ptxas`.
    num_warps = 4 if rows <= 16 else 8
    block_n = block_n or min(block[0], 16 if rows <= 16 else 128)  # decode: one program per 16 rows of W
    if block[0] % block_n:
        raise ValueError(f"block_n {block_n} must divide the scale block {block[0]}")
    grid_mn = triton.cdiv(rows, block_m) * triton.cdiv(out_features, block_n)
    if splits is None:  # few rows: split K until the weight stream has ~2 programs per SM of an H100
        splits = max(1, min(triton.cdiv(TARGET_PROGRAMS, grid_mn), triton.cdiv(in_features, block[1]))) if rows <= 16 else 1
    k_per_split = triton.cdiv(triton.cdiv(in_features, splits), block[1]) * block[1]
    splits = triton.cdiv(in_features, k_per_split)
    out = torch.empty(rows, out_features, dtype=x.dtype, device=x.device)
    # fp32 partial sums of each K range (and projection) and the tiles' arrival counts; one split needs neither
    partials = torch.empty(splits * len(projections), rows, out_features, dtype=torch.float32, device=x.device) if splits > 1 else out
    counts = arrivals(x.device, grid_mn) if splits > 1 else out
    _fp8_linear_kernel[(triton.cdiv(rows, block_m), triton.cdiv(out_features, block_n), splits)](
        flat, stored(weight), scale_inv, stored(up), up_scale, out, partials, counts,
        rows, out_features, in_features, scale_inv.shape[1] if fp8 else 0, k_per_split,
        flat.stride(0), weight.stride(0), out.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block[1], SCALE_BLOCK_N=block[0], UPCAST=INTERPRET,
        SPLIT_K=splits > 1, SWIGLU=len(projections) == 2, FP8=fp8, num_warps=num_warps,
    )
    return out.view(*x.shape[:-1], out_features)


def check_projections(x: torch.Tensor, projections: list[Projection], block: tuple[int, int]) -> None:
    """The kernel reads by the first projection's strides and scale grid: each must match them."""
    weight, scale_inv = projections[0]
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x has {x.shape[-1]} features, the weight takes {weight.shape[1]}")
    for w, s in projections:
        if w.stride() != (w.shape[1], 1):
            raise ValueError(f"weights must be contiguous [out, in], got strides {w.stride()}")
        if s is None:
            continue
        if w.dtype != torch.float8_e4m3fn:
            raise ValueError(f"a scaled weight must be float8_e4m3fn, not {w.dtype}")
        grid = (-(-w.shape[0] // block[0]), -(-w.shape[1] // block[1]))
        if tuple(s.shape) != grid or not s.is_contiguous():
            raise ValueError(f"scale_inv must be contiguous of shape {grid} for blocks {block}, got {tuple(s.shape)}")


def stored(weight: torch.Tensor) -> torch.Tensor:
    """FP8 weights as their bytes: the kernel decodes e4m3 itself."""
    return weight.view(torch.uint8) if weight.dtype == torch.float8_e4m3fn else weight


ARRIVAL_SLOTS = 4096  # tiles one split launch may have; decode launches split only below ~264
_arrivals: dict[tuple, torch.Tensor] = {}
_outgrown: list[torch.Tensor] = []  # never freed: a captured CUDA graph may still hold their addresses


def arrivals(device: torch.device, tiles: int) -> torch.Tensor:
    """Per output tile, how many of its K ranges have finished: all zero between launches (the
    last program resets its own). One buffer per stream, so launches that may run at once never
    share; a buffer is never freed, so no graph replays into memory that was handed on."""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (device, stream)
    counts = _arrivals.get(key)
    if counts is None or counts.numel() < tiles:
        if counts is not None:
            _outgrown.append(counts)
        counts = _arrivals[key] = torch.zeros(max(tiles, ARRIVAL_SLOTS), dtype=torch.int32, device=device)
    return counts


def fp8_linear_reference(x: torch.Tensor, weight: torch.Tensor, scale_inv: torch.Tensor, block=(128, 128)) -> torch.Tensor:
    return (x.float() @ dequantize_fp8_block(weight, scale_inv, torch.float32, block).T).to(x.dtype)
