"""Weight formats of K2 checkpoints: INT4 pack-quantized (group 32) and block FP8.

INT4 follows the compressed-tensors `pack-quantized` layout so checkpoint tensors
are used as they are: `packed` int32 `[out, in/8]`, eight 4-bit values per word,
the lowest nibble holding the lowest input column, each stored as q + 8 with q in
[-8, 7]; `scale` `[out, in/32]` (bf16). W[r, c] = (nibble(r, c) - 8) * scale[r, c // 32].
"""

from __future__ import annotations

import torch

INT4_GROUP = 32
_NIBBLES = 8  # per int32 word
_SHIFTS = torch.arange(0, 32, 4, dtype=torch.int32)  # nibble k of a word sits at bit 4k


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int8 values in [-8, 7], `[out, in]` (in divisible by 8) -> int32 `[out, in/8]`."""
    if q.shape[-1] % _NIBBLES:
        raise ValueError(f"INT4 packing needs in_features divisible by 8, got {q.shape[-1]}")
    nibbles = (q.to(torch.int32) + 8).view(*q.shape[:-1], -1, _NIBBLES)
    # Bit 31 belongs to the top nibble: shifting it in overflows to a negative int32, as intended.
    return (nibbles << _SHIFTS.to(q.device)).sum(-1, dtype=torch.int32)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """int32 `[..., in/8]` -> int8 `[..., in]` values in [-8, 7]."""
    nibbles = (packed.unsqueeze(-1) >> _SHIFTS.to(packed.device)) & 0xF
    return (nibbles.to(torch.int8) - 8).flatten(-2)


def quantize_int4(weight: torch.Tensor, group: int = INT4_GROUP, levels: float = 7.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest symmetric INT4 with one bf16 scale per `group` input columns.

    The scale maps each group's largest magnitude to `levels` steps. At 7.5 the
    extreme value clips to ±7 (or -8) steps, but every other value gets a 7% finer
    grid than at 7, which lowers the error (measured in docs/benchmarks.md).
    Returns (packed, scale).
    """
    out_features, in_features = weight.shape[-2:]
    if in_features % group:
        raise ValueError(f"INT4 group {group} does not divide in_features {in_features}")
    grouped = weight.float().reshape(*weight.shape[:-1], in_features // group, group)
    scale = (grouped.abs().amax(-1, keepdim=True) / levels).to(torch.bfloat16)
    safe = scale.float().clamp_min(torch.finfo(torch.float32).tiny)  # all-zero groups stay zero
    q = torch.round(grouped / safe).clamp(-8, 7).to(torch.int8).reshape(weight.shape)
    return pack_int4(q), scale.squeeze(-1)


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    q = unpack_int4(packed)
    group = q.shape[-1] // scale.shape[-1]
    grouped = q.view(*q.shape[:-1], scale.shape[-1], group).float() * scale.float().unsqueeze(-1)
    return grouped.reshape(q.shape).to(dtype)


def quantize_fp8_block(weight: torch.Tensor, block: tuple[int, int] = (128, 128)) -> tuple[torch.Tensor, torch.Tensor]:
    """Block FP8 (e4m3) as in DeepSeek-V3/K2 checkpoints: returns (weight_fp8, weight_scale_inv),
    where the real weight is `weight_fp8 * weight_scale_inv` per block. Used to build test checkpoints."""
    rows, cols = weight.shape
    scale = _block_amax(weight.float(), block) / torch.finfo(torch.float8_e4m3fn).max
    scale = scale.clamp_min(torch.finfo(torch.float32).tiny)
    expanded = _expand_blocks(scale, block, rows, cols)
    return (weight.float() / expanded).to(torch.float8_e4m3fn), scale


def dequantize_fp8_block(
    weight: torch.Tensor, scale_inv: torch.Tensor, dtype: torch.dtype = torch.bfloat16, block: tuple[int, int] = (128, 128)
) -> torch.Tensor:
    rows, cols = weight.shape[-2:]
    expected = (-(-rows // block[0]), -(-cols // block[1]))
    if tuple(scale_inv.shape[-2:]) != expected:
        raise ValueError(f"FP8 scale shape {tuple(scale_inv.shape)} does not match weight {tuple(weight.shape)} in {block} blocks")
    return (weight.float() * _expand_blocks(scale_inv.float(), block, rows, cols)).to(dtype)


def _expand_blocks(scale: torch.Tensor, block: tuple[int, int], rows: int, cols: int) -> torch.Tensor:
    grown = scale.repeat_interleave(block[0], dim=-2).repeat_interleave(block[1], dim=-1)
    return grown[..., :rows, :cols]


def _block_amax(weight: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    rows, cols = weight.shape
    padded = torch.nn.functional.pad(weight.abs(), (0, -cols % block[1], 0, -rows % block[0]))
    return padded.view(padded.shape[0] // block[0], block[0], padded.shape[1] // block[1], block[1]).amax(dim=(1, 3))
