"""RMSNorm in one launch, optionally after the residual add (Triton).

In torch ops a norm is eight launches (upcast, square, mean, add, rsqrt, two multiplies,
downcast), each too small to matter alone; a decode step of K2 has four norms per layer.
One program per row keeps the row in registers: it reads x (and the residual) once and
writes the normalised row (and the sum). The torch reference is `model.rms_norm_ops`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_kernel(
    x_ptr, residual_ptr, weight_ptr, out_ptr, sum_ptr,
    dim, eps, stride_x, stride_r, stride_out, stride_sum,
    BLOCK: tl.constexpr, ADD: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    ok = cols < dim
    x = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
    if ADD:  # the sum is rounded to its dtype first: the norm reads what the residual stream holds
        summed = (x + tl.load(residual_ptr + row * stride_r + cols, mask=ok, other=0.0).to(tl.float32))
        summed = summed.to(sum_ptr.dtype.element_ty)
        tl.store(sum_ptr + row * stride_sum + cols, summed, mask=ok)
        x = summed.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(x * x, axis=0) / dim + eps)
    weight = tl.load(weight_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, (x * inv_rms * weight).to(out_ptr.dtype.element_ty), mask=ok)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    """x [..., dim] normalised by its root mean square, times weight, in x.dtype. With a residual,
    normalises x + residual instead and returns (normalised, x + residual)."""
    dim = x.shape[-1]
    if weight.shape != (dim,):
        raise ValueError(f"weight of shape {tuple(weight.shape)} does not match rows of {dim}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual of shape {tuple(residual.shape)} does not match x {tuple(x.shape)}")
    rows = x.reshape(-1, dim)  # a view where it can be: a column slice keeps its row stride
    others = residual.reshape(-1, dim) if residual is not None else rows
    if rows.stride(-1) != 1 or others.stride(-1) != 1:
        raise ValueError("rms_norm needs rows whose elements are contiguous")
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    summed = torch.empty(x.shape, dtype=x.dtype, device=x.device) if residual is not None else out
    if rows.shape[0] == 0:
        return out if residual is None else (out, summed)
    block = triton.next_power_of_2(dim)
    _rms_norm_kernel[(rows.shape[0],)](
        rows, others, weight, out, summed, dim, eps,
        rows.stride(0), others.stride(0), dim, dim,
        BLOCK=block, ADD=residual is not None, num_warps=min(16, max(1, block // 512)),
    )
    return out if residual is None else (out, summed)

