"""Fused mixture-of-experts for routed experts stored INT4 (W4A16, group 32), block FP8 or
dense, in Triton.

One MoE layer is four launches, none of which syncs with the host:

1. `route`: sigmoid + bias + group-limited top-k + renormalise + scale, one program per token.
2. `align_by_expert` (torch ops): (token, slot) pairs sorted by expert and padded so each
   block of BLOCK_M rows belongs to one expert; blocks past the end are marked -1. At decode
   (few pairs) each pair gets a block of its own, which the kernels derive from the block's
   index: no launch at all.
3. `_gate_up_kernel`: x·gateᵀ and x·upᵀ from the packed weights in one pass over x, with
   silu(gate)·up in the epilogue.
4. `_down_kernel`: h·downᵀ, times the routing weight, added into the token's output row
   (the top-k reduction is the atomic add). Split over K for few tokens, so the weight
   stream has enough programs to fill the GPU.

The weights are read in place, in the checkpoint's format: INT4 in the compressed-tensors
layout (int32 words of eight nibbles, lowest nibble = lowest input column; bf16 scale per 32
columns), e4m3 with an fp32 scale per 128x128 block (K2 0711/0905, DeepSeek-V3), or bf16
(Moonlight); each tile is dequantised in registers. `moe_reference` is the torch ground
truth. Under TRITON_INTERPRET=1 (CPU tests) loaded bf16 is upcast to
fp32 first: the interpreter's bf16 arithmetic is wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kimicode.backends.k2.kernels.fp8_linear import e4m3_to_float, stored
from kimicode.backends.k2.quant import dequantize_fp8_block, dequantize_int4

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


# ---------------------------------------------------------------- routing


@triton.jit
def _route_kernel(
    logits_ptr, bias_ptr, weights_ptr, ids_ptr,
    n_experts, scale,
    N_GROUP: tl.constexpr, TOPK_GROUP: tl.constexpr, TOP_K: tl.constexpr, NORMALISE: tl.constexpr,
    BLOCK_E: tl.constexpr, GROUP_SIZE: tl.constexpr, TOPK_PAD: tl.constexpr,
):
    token = tl.program_id(0)
    experts = tl.arange(0, BLOCK_E)
    valid = experts < n_experts
    logits = tl.load(logits_ptr + token * n_experts + experts, mask=valid, other=0.0).to(tl.float32)
    scores = tl.sigmoid(logits)
    biased = tl.where(valid, scores + tl.load(bias_ptr + experts, mask=valid, other=0.0), float("-inf"))
    if N_GROUP > 1:
        # Group score = sum of its two best biased scores; keep the TOPK_GROUP best groups.
        grouped = tl.reshape(biased, (N_GROUP, GROUP_SIZE))
        in_group = tl.arange(0, GROUP_SIZE)
        best = tl.max(grouped, axis=1)
        best_at = tl.argmax(grouped, axis=1)
        second = tl.max(tl.where(in_group[None, :] == best_at[:, None], float("-inf"), grouped), axis=1)
        group_scores = best + second
        groups = tl.arange(0, N_GROUP)
        kept = tl.zeros((N_GROUP,), dtype=tl.int1)
        for _ in tl.static_range(TOPK_GROUP):
            pick = tl.argmax(tl.where(kept, float("-inf"), group_scores), axis=0)
            kept = kept | (groups == pick)
        keep_expert = tl.reshape(tl.broadcast_to(kept[:, None], (N_GROUP, GROUP_SIZE)), (BLOCK_E,))
        biased = tl.where(keep_expert, biased, float("-inf"))
    slots = tl.arange(0, TOPK_PAD)
    chosen_weights = tl.zeros((TOPK_PAD,), dtype=tl.float32)
    chosen_ids = tl.zeros((TOPK_PAD,), dtype=tl.int32)
    for slot in tl.static_range(TOP_K):
        pick = tl.argmax(biased, axis=0)
        weight = tl.sum(tl.where(experts == pick, scores, 0.0), axis=0)  # the unbiased score
        chosen_weights = tl.where(slots == slot, weight, chosen_weights)
        chosen_ids = tl.where(slots == slot, pick, chosen_ids)
        biased = tl.where(experts == pick, float("-inf"), biased)
    if NORMALISE:
        chosen_weights = chosen_weights * (scale / (tl.sum(chosen_weights, axis=0) + 1e-20))
    else:
        chosen_weights = chosen_weights * scale
    tl.store(weights_ptr + token * TOP_K + slots, chosen_weights, mask=slots < TOP_K)
    tl.store(ids_ptr + token * TOP_K + slots, chosen_ids, mask=slots < TOP_K)


def route(
    logits: torch.Tensor, bias: torch.Tensor, n_group: int, topk_group: int, top_k: int, normalise: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits [tokens, experts] (fp32) -> (weights fp32, ids int32) [tokens, top_k];
    same choices as `model.select_experts` (its reference)."""
    tokens, n_experts = logits.shape
    if n_group > 1 and n_experts % n_group:
        raise ValueError(f"{n_experts} experts do not split into {n_group} groups")
    group_size = n_experts // n_group
    if n_group > 1 and (group_size & (group_size - 1) or n_group & (n_group - 1)):
        raise ValueError("grouped routing in the kernel needs power-of-two groups and group sizes")
    block_e = triton.next_power_of_2(n_experts)
    weights = torch.empty(tokens, top_k, dtype=torch.float32, device=logits.device)
    ids = torch.empty(tokens, top_k, dtype=torch.int32, device=logits.device)
    if tokens:
        _route_kernel[(tokens,)](
            logits.float().contiguous(), bias.float().contiguous(), weights, ids, n_experts, float(scale),
            N_GROUP=n_group, TOPK_GROUP=topk_group, TOP_K=top_k, NORMALISE=normalise,
            BLOCK_E=block_e, GROUP_SIZE=max(group_size, 1), TOPK_PAD=triton.next_power_of_2(top_k),
        )
    return weights, ids


# ---------------------------------------------------------------- alignment


@dataclass(frozen=True, slots=True)
class Alignment:
    """(token, slot) pairs grouped by expert: `pairs[r]` is the pair index (token·top_k + slot)
    of row r, or `num_pairs` for padding; block b = rows [b·block_m, (b+1)·block_m) belongs
    to expert `block_experts[b]`, or to none (-1) past the last expert's rows. `direct`: block
    b holds pair b alone in its first row, and `pairs` is None (the kernels know it)."""

    pairs: torch.Tensor | None
    block_experts: torch.Tensor
    block_m: int
    num_pairs: int
    direct: bool = False

    @property
    def rows(self) -> int:
        return self.block_experts.numel() * self.block_m


# Up to this many (token, slot) pairs, each pair gets a block of its own: no sorting and no
# launch instead of ~30 (at decode, launches would cost more than the weight stream).
DIRECT_PAIRS = 64


def align_by_expert(ids: torch.Tensor, n_experts: int, block_m: int) -> Alignment:
    """Sized for the worst case from shapes alone, so nothing waits on the GPU (CUDA graphs)."""
    if ids.numel() <= DIRECT_PAIRS:
        return align_one_pair_per_block(ids, block_m)
    flat = ids.flatten().long()
    num_pairs = flat.numel()
    # scatter_add, not bincount: bincount on CUDA reads the largest id back to size its output.
    counts = torch.zeros(n_experts, dtype=torch.long, device=ids.device).scatter_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    ends = padded.cumsum(0)
    starts = ends - padded
    order = torch.argsort(flat, stable=True)
    expert_of = flat[order]
    first_of_expert = counts.cumsum(0) - counts
    rank = torch.arange(num_pairs, device=ids.device) - first_of_expert[expert_of]
    max_blocks = triton.cdiv(num_pairs, block_m) + min(n_experts, num_pairs)
    pairs = torch.full((max_blocks * block_m,), num_pairs, dtype=torch.int32, device=ids.device)
    pairs[starts[expert_of] + rank] = order.to(torch.int32)
    block_starts = torch.arange(max_blocks, device=ids.device) * block_m
    block_experts = torch.searchsorted(ends, block_starts, right=True)
    block_experts = torch.where(block_starts < ends[-1], block_experts, -1).to(torch.int32)
    return Alignment(pairs, block_experts, block_m, num_pairs)


def align_one_pair_per_block(ids: torch.Tensor, block_m: int) -> Alignment:
    """Block p holds pair p alone. A token's top-k experts are distinct, so at one token no
    expert's weights are read twice; with a few tokens, rarely. int32 ids (as `route` makes
    them) are used as they are."""
    return Alignment(None, ids.flatten().to(torch.int32), block_m, ids.numel(), direct=True)


# ---------------------------------------------------------------- expert GEMMs


@triton.jit
def _load_int4_tile(packed_ptr, scale_ptr, rows, k0, rows_ok, row_stride_words, row_stride_scales,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, FP32_TILES: tl.constexpr):
    """W[rows, k0:k0+BLOCK_K] as [BLOCK_N, BLOCK_K] bf16 (fp32 with FP32_TILES), from BLOCK_K/8 words
    and BLOCK_K/32 scales per row: each word is loaded once and split into its eight nibbles in
    registers. A nibble n OR-ed into the mantissa of bf16 128.0 (0x4300) is the bf16 128 + n,
    exactly: subtracting 136 gives n - 8 with no integer-to-float conversion, in 16-bit lanes."""
    words_at = k0 // 8 + tl.arange(0, BLOCK_K // 8)
    words = tl.load(packed_ptr + rows[:, None] * row_stride_words + words_at[None, :], mask=rows_ok[:, None], other=0)
    shifts = tl.arange(0, 8) * 4
    nibbles = (words[:, :, None] >> shifts[None, None, :]) & 0xF  # lowest nibble = lowest column
    values = (tl.reshape(nibbles, (BLOCK_N, BLOCK_K)) | 0x4300).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    scales_at = k0 // 32 + tl.arange(0, BLOCK_K // 32)
    scales = tl.load(scale_ptr + rows[:, None] * row_stride_scales + scales_at[None, :], mask=rows_ok[:, None], other=0.0)
    per_column = tl.reshape(tl.broadcast_to(scales[:, :, None], (BLOCK_N, BLOCK_K // 32, 32)), (BLOCK_N, BLOCK_K))
    if FP32_TILES:  # the same values in fp32 lanes: one rounding to whatever dtype the GEMM uses
        return (values.to(tl.float32) - 136.0) * per_column.to(tl.float32)
    return (values - 136.0) * per_column


# Storage formats, as the kernels' FMT constexpr (globals a kernel reads must be constexpr).
INT4, FP8, DENSE = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
FORMATS = {"int4": INT4.value, "fp8": FP8.value, "dense": DENSE.value}


@triton.jit
def _load_weight_tile(w_ptr, s_ptr, rows, k0, rows_ok, in_features,
                      FMT: tl.constexpr, SCALE_N: tl.constexpr, SCALE_K: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, FP32_TILES: tl.constexpr):
    """One expert's W[rows, k0:k0+BLOCK_K], dequantised: bf16 from INT4, fp32 from FP8 (BLOCK_K
    divides SCALE_K, so each row takes one scale), as stored when dense; fp32 with FP32_TILES
    (the interpreter, whose bf16 arithmetic is wrong, and activations other than bf16, for
    which a bf16 product would round the weight twice)."""
    # One return, after static branches: the compiler (unlike the interpreter) type-checks
    # every return of a function, even those an early constexpr branch skips.
    if FMT == INT4:
        w = _load_int4_tile(w_ptr, s_ptr, rows, k0, rows_ok, in_features // 8, in_features // 32, BLOCK_N, BLOCK_K, FP32_TILES)
    else:
        k = k0 + tl.arange(0, BLOCK_K)
        w = tl.load(w_ptr + rows[:, None] * in_features + k[None, :], mask=rows_ok[:, None], other=0)
        if FMT == FP8:
            scale = tl.load(s_ptr + (rows // SCALE_N) * tl.cdiv(in_features, SCALE_K) + k0 // SCALE_K, mask=rows_ok, other=0.0)
            w = e4m3_to_float(w) * scale[:, None]
        elif FP32_TILES:
            w = w.to(tl.float32)
    return w


@triton.jit
def _block_rows(pairs_ptr, block, num_pairs, top_k, BLOCK_M: tl.constexpr, DIRECT: tl.constexpr):
    """(rows, pairs, which rows are real, their tokens) of one aligned block. int64 rows:
    rows·stride passes 2³¹ at 128K tokens."""
    rows = block.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    if DIRECT:  # pair `block` in the first row, the rest padding
        pairs = tl.where(tl.arange(0, BLOCK_M) == 0, block, num_pairs)
    else:
        pairs = tl.load(pairs_ptr + rows)
    return rows, pairs, pairs < num_pairs, (pairs // top_k).to(tl.int64)


@triton.jit
def _zeros(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WEIGHT_FIRST: tl.constexpr):
    if WEIGHT_FIRST:
        return tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        return tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)


@triton.jit
def _accumulate(acc, a, w, WEIGHT_FIRST: tl.constexpr):
    """acc + a·wᵀ, or with WEIGHT_FIRST acc + w·aᵀ (acc transposed until the epilogue): the
    dequantised weights, already in registers, are then the A operand, which Hopper's wgmma
    may read from registers while B must sit in shared memory. Which wins is measured by
    `kimicode bench kernels`."""
    if WEIGHT_FIRST:
        return tl.dot(w, tl.trans(a), acc)
    else:
        return tl.dot(a, tl.trans(w), acc)


@triton.jit
def _gate_up_kernel(
    x_ptr, gate_ptr, gate_scale, up_ptr, up_scale, pairs_ptr, block_experts_ptr, h_ptr,
    num_pairs, top_k, hidden, inter,
    stride_x, stride_expert_w, stride_expert_s, stride_h,
    FMT: tl.constexpr, SCALE_N: tl.constexpr, SCALE_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, UPCAST: tl.constexpr,
    FP32_TILES: tl.constexpr, WEIGHT_FIRST: tl.constexpr, DIRECT: tl.constexpr,
):
    block = tl.program_id(1)
    expert = tl.load(block_experts_ptr + block)
    if expert < 0:
        return
    rows, pairs, row_ok, tokens = _block_rows(pairs_ptr, block, num_pairs, top_k, BLOCK_M, DIRECT)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < inter
    gate_w = gate_ptr + expert.to(tl.int64) * stride_expert_w
    up_w = up_ptr + expert.to(tl.int64) * stride_expert_w
    gate_s = gate_scale + expert.to(tl.int64) * stride_expert_s
    up_s = up_scale + expert.to(tl.int64) * stride_expert_s
    acc_gate = _zeros(BLOCK_M, BLOCK_N, WEIGHT_FIRST)
    acc_up = _zeros(BLOCK_M, BLOCK_N, WEIGHT_FIRST)
    for k0 in range(0, hidden, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(x_ptr + tokens[:, None] * stride_x + k[None, :], mask=row_ok[:, None], other=0.0)
        g = _load_weight_tile(gate_w, gate_s, n, k0, n_ok, hidden, FMT, SCALE_N, SCALE_K, BLOCK_N, BLOCK_K, FP32_TILES)
        u = _load_weight_tile(up_w, up_s, n, k0, n_ok, hidden, FMT, SCALE_N, SCALE_K, BLOCK_N, BLOCK_K, FP32_TILES)
        if UPCAST:
            a = a.to(tl.float32)
        else:
            g = g.to(a.dtype)
            u = u.to(a.dtype)
        acc_gate = _accumulate(acc_gate, a, g, WEIGHT_FIRST)
        acc_up = _accumulate(acc_up, a, u, WEIGHT_FIRST)
    if WEIGHT_FIRST:
        acc_gate = tl.trans(acc_gate)
        acc_up = tl.trans(acc_up)
    h = acc_gate * tl.sigmoid(acc_gate) * acc_up
    tl.store(h_ptr + rows[:, None] * stride_h + n[None, :], h.to(h_ptr.dtype.element_ty), mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _down_kernel(
    h_ptr, down_ptr, down_scale, pairs_ptr, block_experts_ptr, weights_ptr, out_ptr,
    num_pairs, top_k, hidden, inter, k_per_split,
    stride_h, stride_expert_w, stride_expert_s, stride_out,
    FMT: tl.constexpr, SCALE_N: tl.constexpr, SCALE_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, UPCAST: tl.constexpr,
    FP32_TILES: tl.constexpr, WEIGHT_FIRST: tl.constexpr, DIRECT: tl.constexpr,
):
    block = tl.program_id(1)
    expert = tl.load(block_experts_ptr + block)
    if expert < 0:
        return
    rows, pairs, row_ok, tokens = _block_rows(pairs_ptr, block, num_pairs, top_k, BLOCK_M, DIRECT)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < hidden
    k_start = tl.program_id(2) * k_per_split
    weights = down_ptr + expert.to(tl.int64) * stride_expert_w
    scales = down_scale + expert.to(tl.int64) * stride_expert_s
    acc = _zeros(BLOCK_M, BLOCK_N, WEIGHT_FIRST)
    k_end = tl.minimum(k_start + k_per_split, inter)
    for k0 in range(k_start, k_end, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(h_ptr + rows[:, None] * stride_h + k[None, :], mask=row_ok[:, None], other=0.0)
        w = _load_weight_tile(weights, scales, n, k0, n_ok, inter, FMT, SCALE_N, SCALE_K, BLOCK_N, BLOCK_K, FP32_TILES)
        if UPCAST:
            a = a.to(tl.float32)
        else:
            w = w.to(a.dtype)
        acc = _accumulate(acc, a, w, WEIGHT_FIRST)
    if WEIGHT_FIRST:
        acc = tl.trans(acc)
    route_weight = tl.load(weights_ptr + pairs, mask=row_ok, other=0.0)
    acc = acc * route_weight[:, None]
    # relaxed: a plain reduction, no ordering with other memory is needed
    tl.atomic_add(out_ptr + tokens[:, None] * stride_out + n[None, :], acc, mask=row_ok[:, None] & n_ok[None, :], sem="relaxed")


@dataclass(frozen=True, slots=True)
class MoEConfig:
    block_m: int
    block_n: int
    block_k: int
    splits: int  # split-K of the down GEMM
    num_warps: int = 4
    weight_first: bool = False  # the weights as the dot's A operand (see _accumulate)


def pick_config(tokens: int, top_k: int, hidden: int, inter: int, max_block_k: int = 256) -> MoEConfig:
    """Few tokens: weight streaming (GEMV-like) wants many small programs; many tokens:
    tensor-core tiles. Chosen by reasoning about the shapes; `kimicode bench kernels` times them."""
    if tokens * top_k <= 128:  # stream the weights: many narrow programs, long K steps
        config = MoEConfig(block_m=16, block_n=16, block_k=256, splits=1)
    else:
        config = MoEConfig(block_m=64, block_n=128, block_k=64, splits=1, num_warps=8)
    block_k = next(
        (k for k in (256, 128, 64, 32) if k <= min(config.block_k, max_block_k) and hidden % k == 0 and inter % k == 0), 32
    )
    return MoEConfig(config.block_m, config.block_n, block_k, config.splits, config.num_warps, config.weight_first)


@dataclass(frozen=True, slots=True)
class ExpertWeights:
    """A layer's routed experts as the checkpoint stores them, stacked on the expert axis.
    int4: int32 words [E, out, in/8] with bf16 scales [E, out, in/32]; fp8: e4m3 [E, out, in]
    with fp32 scales [E, out/block, in/block]; dense: [E, out, in], no scales."""

    fmt: str  # "int4" | "fp8" | "dense"
    gate: torch.Tensor  # [E, inter, hidden(/8)]
    up: torch.Tensor
    down: torch.Tensor  # [E, hidden, inter(/8)]
    gate_scale: torch.Tensor | None = None
    up_scale: torch.Tensor | None = None
    down_scale: torch.Tensor | None = None
    block: tuple[int, int] = (128, 128)  # fp8 scale block

    @property
    def shape(self) -> tuple[int, int, int]:
        """(experts, hidden, inter)."""
        return self.gate.shape[0], self.down.shape[1], self.gate.shape[1]

    def dense(self, projection: str, expert: int) -> torch.Tensor:
        """One expert's projection ("gate", "up", "down") dequantised to fp32."""
        weight, scale = getattr(self, projection)[expert], getattr(self, f"{projection}_scale")
        if self.fmt == "int4":
            return dequantize_int4(weight, scale[expert], torch.float32)
        if self.fmt == "fp8":
            return dequantize_fp8_block(weight, scale[expert], torch.float32, self.block)
        return weight.float()


def fused_moe(
    x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, experts: ExpertWeights, config: MoEConfig | None = None,
    *, add_to: torch.Tensor | None = None,
) -> torch.Tensor:
    """Σ_slots weight · down(silu(gate(x)) · up(x)) for each token of x [tokens, hidden], in
    x.dtype. `add_to` (fp32 [tokens, hidden], consumed): what the sum starts from instead of zeros."""
    tokens, hidden = x.shape
    n_experts, _, inter = experts.shape
    top_k = ids.shape[1]
    fp8 = experts.fmt == "fp8"
    if add_to is not None and (add_to.shape != (tokens, hidden) or add_to.dtype != torch.float32
                               or not add_to.is_contiguous() or add_to.device != x.device):
        raise ValueError(f"add_to must be contiguous fp32 of shape {(tokens, hidden)} on {x.device}, "
                         f"not {add_to.dtype} {tuple(add_to.shape)} on {add_to.device}")
    config = config or pick_config(tokens, top_k, hidden, inter, max_block_k=experts.block[1] if fp8 else 256)
    if hidden % max(config.block_k, 32) or inter % max(config.block_k, 32):
        raise ValueError(f"hidden {hidden} and inter {inter} must be multiples of block_k {config.block_k} and 32")
    if fp8 and experts.block[1] % config.block_k:
        raise ValueError(f"block_k {config.block_k} must divide the FP8 scale block {experts.block[1]}")
    stacked = (experts.gate, experts.up, experts.down, experts.gate_scale, experts.up_scale, experts.down_scale)
    if not all(t is None or t.is_contiguous() for t in stacked):
        raise ValueError("expert tensors must be contiguous: the kernels derive row strides from the shapes")

    def scales(scale: torch.Tensor | None, weight: torch.Tensor) -> tuple[torch.Tensor, int]:
        return (weight, 0) if scale is None else (scale, scale.stride(0))  # dense: a pointer never read

    gate_scale, stride_s = scales(experts.gate_scale, experts.gate)
    up_scale, _ = scales(experts.up_scale, experts.up)
    down_scale, down_stride_s = scales(experts.down_scale, experts.down)
    align = align_by_expert(ids, n_experts, config.block_m)
    constants = dict(  # both kernels'
        FMT=FORMATS[experts.fmt], SCALE_N=experts.block[0], SCALE_K=experts.block[1],
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        UPCAST=INTERPRET, FP32_TILES=INTERPRET or x.dtype != torch.bfloat16,
        WEIGHT_FIRST=config.weight_first, DIRECT=align.direct, num_warps=config.num_warps,
    )
    k_per_split = triton.cdiv(triton.cdiv(inter, config.splits), config.block_k) * config.block_k
    x = x.contiguous()
    blocks = align.block_experts.numel()
    pairs = align.block_experts if align.direct else align.pairs  # direct: a pointer never read
    h = torch.empty(align.rows, inter, dtype=x.dtype, device=x.device)
    # N-blocks vary fastest: programs running together share one block of rows (x stays in L2)
    # and walk one expert's weights, instead of every N-block sweeping all of x.
    _gate_up_kernel[(triton.cdiv(inter, config.block_n), blocks)](
        x, stored(experts.gate), gate_scale, stored(experts.up), up_scale,
        pairs, align.block_experts, h,
        align.num_pairs, top_k, hidden, inter,
        x.stride(0), experts.gate.stride(0), stride_s, h.stride(0), **constants,
    )
    out = torch.zeros(tokens, hidden, dtype=torch.float32, device=x.device) if add_to is None else add_to
    _down_kernel[(triton.cdiv(hidden, config.block_n), blocks, config.splits)](
        h, stored(experts.down), down_scale, pairs, align.block_experts,
        weights.float().contiguous(), out,
        align.num_pairs, top_k, hidden, inter, k_per_split,
        h.stride(0), experts.down.stride(0), down_stride_s, out.stride(0), **constants,
    )
    return out.to(x.dtype)


def moe_reference(x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, experts: ExpertWeights) -> torch.Tensor:
    """The same sum with each expert dequantised and run in fp32 (ground truth for the tests)."""
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    xf = x.float()
    for expert in ids.unique().tolist():
        token, slot = (ids == expert).nonzero(as_tuple=True)
        gate, up, down = (experts.dense(projection, expert) for projection in ("gate", "up", "down"))
        h = torch.nn.functional.silu(xf[token] @ gate.T) * (xf[token] @ up.T)
        out.index_add_(0, token, (h @ down.T) * weights[token, slot, None].float())
    return out
