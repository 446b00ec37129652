"""The K2 / DeepSeek-V3 transformer, in one file, with torch reference ops.

Every shape comes from `ModelConfig`. Attention is MLA: the KV cache holds only the
normalised latent (`kv_lora_rank`) and the shared rope key (`qk_rope_head_dim`) per
token; decode folds `kv_b_proj` into the query and the output ("absorbed"), so the
per-head keys and values are never materialised. Linear weights stay in the
checkpoint's format (bf16, block FP8, INT4 experts) and are dequantised on use;
fused kernels replace these reference paths by device and shape.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right

from kimicode.backends.k2.config import ModelConfig, fused_moe_fits
from kimicode.backends.k2.quant import dequantize_fp8_block, dequantize_int4

# Triton kernels: "auto" uses them on CUDA tensors; "on" everywhere (the CPU tests run them
# in Triton's interpreter); "off" keeps the torch reference ops.
KERNELS = os.environ.get("KIMICODE_KERNELS", "auto")


def use_kernels(tensor: torch.Tensor) -> bool:
    return KERNELS == "on" or (KERNELS == "auto" and tensor.is_cuda)


SCORES_BUDGET = 256 * 1024**2  # bytes of fp32 attention scores for one chunk of queries (torch ops)
# Bytes of per-head keys and values expanded attention builds at once: up to it (K2: ≈ 52K
# tokens of context) one fused-attention call; past it the context goes in slices.
EXPANDED_BUDGET = 4 * 1024**3
# Rows up to which an MLP's gate and up run as one SwiGLU launch. At decode it saves launches;
# past it each projection keeps its own tiled GEMM (cuBLAS for bf16) until a benchmark says otherwise.
SWIGLU_ROWS = 16
KERNEL_TURN_TOKENS = 256  # new tokens per MLA-kernel launch on the absorbed path (bounds its partials)
# The shared expert on a second CUDA stream beside the routed experts. Off by default: at decode
# both are bandwidth-bound, so running them side by side reads no fewer bytes and can only hide
# launch tails; `kimicode bench layer` times the layer both ways to decide.
OVERLAP_SHARED = os.environ.get("KIMICODE_OVERLAP_SHARED") == "1"

# How a linear weight is held in memory: "dense" (the compute dtype), "fp8" (block FP8
# with `weight_scale_inv`) or "int4" (packed, group 32; routed experts only).
WeightFormat = str


@dataclass(frozen=True, slots=True)
class Formats:
    """The storage format of each weight family and the compute dtype."""

    dtype: torch.dtype = torch.bfloat16
    linear: WeightFormat = "dense"  # attention, dense MLP, shared experts
    experts: WeightFormat = "dense"  # routed experts
    fp8_block: tuple[int, int] = (128, 128)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, dtype: torch.dtype):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_kernels(x):
            from kimicode.backends.k2.kernels.norm import rms_norm

            return rms_norm(x, self.weight, self.eps)
        return rms_norm_ops(x, self.weight, self.eps)

    def after_residual(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the norm of x + residual, x + residual): one launch with the kernels."""
        if use_kernels(x):
            from kimicode.backends.k2.kernels.norm import rms_norm

            return rms_norm(x, self.weight, self.eps, residual)
        summed = x + residual
        return rms_norm_ops(summed, self.weight, self.eps), summed


def rms_norm_ops(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in torch ops: the reference for the norm kernel."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (x32 * weight.float()).to(x.dtype)


class Linear(nn.Module):
    """A bias-free linear layer whose weight is dense or block FP8 (dequantised on use)."""

    def __init__(self, in_features: int, out_features: int, formats: Formats, fmt: WeightFormat | None = None):
        super().__init__()
        self.fmt = fmt or formats.linear
        self.block = formats.fp8_block
        if self.fmt == "fp8":
            self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=torch.float8_e4m3fn), requires_grad=False)
            blocks = (-(-out_features // self.block[0]), -(-in_features // self.block[1]))
            self.weight_scale_inv = nn.Parameter(torch.empty(blocks, dtype=torch.float32), requires_grad=False)
        else:
            self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=formats.dtype), requires_grad=False)

    def dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        if self.fmt == "fp8":
            return dequantize_fp8_block(self.weight, self.weight_scale_inv, dtype, self.block)
        return self.weight if self.weight.dtype == dtype else self.weight.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fmt == "fp8" and use_kernels(x):
            from kimicode.backends.k2.kernels.fp8_linear import fp8_linear

            return fp8_linear(x, self.weight, self.weight_scale_inv, self.block)
        return F.linear(x, self.dense_weight(x.dtype))


class MLP(nn.Module):
    """SwiGLU: the dense layers and the shared experts."""

    def __init__(self, dim: int, inter_dim: int, formats: Formats):
        super().__init__()
        self.gate_proj = Linear(dim, inter_dim, formats)
        self.up_proj = Linear(dim, inter_dim, formats)
        self.down_proj = Linear(inter_dim, dim, formats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_proj, self.up_proj
        decoding = x.numel() // x.shape[-1] <= SWIGLU_ROWS
        if decoding and use_kernels(x) and gate.fmt == up.fmt and (gate.fmt == "fp8" or gate.weight.dtype == x.dtype):
            from kimicode.backends.k2.kernels.fp8_linear import swiglu  # gate, up and silu·up in one launch

            pair = [(p.weight, p.weight_scale_inv if p.fmt == "fp8" else None) for p in (gate, up)]
            return self.down_proj(swiglu(x, *pair, gate.block))
        return self.down_proj(F.silu(gate(x)) * up(x))


# ---------------------------------------------------------------- rope

def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """Per-pair frequencies, YaRN-corrected when `rope_factor` > 1. Kept in fp32: bf16
    frequencies corrupt every position ≥ 1."""
    dim, base = config.qk_rope_head_dim, config.rope_theta
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    if config.rope_factor > 1:
        def correction_dim(rotations: float) -> float:
            return dim * math.log(config.rope_original_max_position / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low = max(math.floor(correction_dim(config.rope_beta_fast)), 0)
        high = min(math.ceil(correction_dim(config.rope_beta_slow)), dim - 1)
        if low == high:
            high += 0.001  # a hard step instead of a division by zero
        ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
        # Pairs below `low` rotate fast enough to keep their frequency; pairs above `high` are interpolated.
        freqs = freqs / config.rope_factor * ramp + freqs * (1 - ramp)
    return freqs.float()


def rope_attention_factor(config: ModelConfig) -> float:
    """YaRN's scale on cos/sin (1.0 for K2, whose mscale equals mscale_all_dim)."""
    if config.rope_factor <= 1:
        return 1.0

    def m(scale: float) -> float:
        return 0.1 * scale * math.log(config.rope_factor) + 1.0

    if config.rope_mscale and config.rope_mscale_all_dim:
        return m(config.rope_mscale) / m(config.rope_mscale_all_dim)
    return m(1.0)


def rope_tables(config: ModelConfig, inv_freq: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    angles = positions.float()[:, None] * inv_freq.to(positions.device)[None, :]
    factor = rope_attention_factor(config)
    return angles.cos() * factor, angles.sin() * factor


class DecodeStep(NamedTuple):
    """What every layer of one decode step shares, made once per step (and per GPU of a pipeline):
    each layer would otherwise launch its own copies of these small tensors."""

    positions: torch.Tensor  # [batch] int64: where each sequence's new token goes
    lengths: torch.Tensor  # [batch] int32: positions + 1, the tokens attention sees
    cos: torch.Tensor  # [batch, rope / 2]
    sin: torch.Tensor

    @classmethod
    def at(cls, config: ModelConfig, inv_freq: torch.Tensor, positions: torch.Tensor) -> DecodeStep:
        return cls(positions, (positions + 1).to(torch.int32), *rope_tables(config, inv_freq, positions))

    def to(self, device: torch.device) -> DecodeStep:
        return DecodeStep(*(t.to(device) for t in self))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Interleaved rope: element pairs (2i, 2i+1) rotate together. x: [batch, seq, ..., rope_dim];
    cos/sin: [seq, rope_dim/2] shared by the batch, or already shaped to broadcast against x."""
    if cos.dim() != x.dim():
        shape = (cos.shape[0],) + (1,) * (x.dim() - 3) + (cos.shape[1],)
        cos, sin = cos.view(shape), sin.view(shape)
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1)
    return rotated.flatten(-2).to(x.dtype)


# ---------------------------------------------------------------- attention

class LatentCache:
    """Per layer: the normalised KV latent and the roped shared key of every cached token."""

    def __init__(self, config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype, devices: list[torch.device]):
        self.max_len = max_len
        self.kv = [torch.zeros(batch, max_len, config.kv_lora_rank, dtype=dtype, device=d) for d in devices]
        self.pe = [torch.zeros(batch, max_len, config.qk_rope_head_dim, dtype=dtype, device=d) for d in devices]

    @property
    def batch(self) -> int:
        return self.kv[0].shape[0] if self.kv else 0


def absorbed_is_cheaper(config: ModelConfig, new: int, total: int) -> bool:
    """Whether `new` queries over `total` keys cost fewer multiply-adds absorbed than expanded.
    Per head, expanding costs kv_rank·(nope+v) per key and absorbing the same per query; per
    (query, key) pair absorbed attention costs 2·kv_rank + rope, expanded 2·qk_head (V is
    padded to the query's size). K2 after a long prefix: absorbed below ≈186 new tokens;
    from position 0 expanded always wins."""
    per_token = config.kv_lora_rank * (config.qk_nope_head_dim + config.v_head_dim)
    extra_per_pair = 2 * config.kv_lora_rank + config.qk_rope_head_dim - 2 * config.qk_head_dim
    return new * total * extra_per_pair < (total - new) * per_token


def expanded_bytes(config: ModelConfig, batch: int, total: int, dtype: torch.dtype) -> int:
    """Transient memory of expanded attention over `total` tokens: kv_b's output, then K and the
    padded V, (nope + v) + 2·qk_head elements per head and token."""
    per_token = config.num_attention_heads * (config.qk_nope_head_dim + config.v_head_dim + 2 * config.qk_head_dim)
    return batch * total * per_token * dtype.itemsize


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, formats: Formats):
        super().__init__()
        self.config = config
        self.n_heads = config.num_attention_heads
        self.nope_dim, self.rope_dim = config.qk_nope_head_dim, config.qk_rope_head_dim
        self.v_dim, self.kv_rank = config.v_head_dim, config.kv_lora_rank
        self.softmax_scale = config.softmax_scale
        head_dim = config.qk_head_dim
        if config.q_lora_rank is None:
            self.q_proj = Linear(config.hidden_size, self.n_heads * head_dim, formats)
        else:
            self.q_a_proj = Linear(config.hidden_size, config.q_lora_rank, formats)
            self.q_a_layernorm = RMSNorm(config.q_lora_rank, config.rms_norm_eps, formats.dtype)
            self.q_b_proj = Linear(config.q_lora_rank, self.n_heads * head_dim, formats)
        self.kv_a_proj_with_mqa = Linear(config.hidden_size, self.kv_rank + self.rope_dim, formats)
        self.kv_a_layernorm = RMSNorm(self.kv_rank, config.rms_norm_eps, formats.dtype)
        self.kv_b_proj = Linear(self.kv_rank, self.n_heads * (self.nope_dim + self.v_dim), formats)
        self.o_proj = Linear(self.n_heads * self.v_dim, config.hidden_size, formats)

    def forward(
        self,
        x: torch.Tensor,
        start: int,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache_kv: torch.Tensor,
        cache_pe: torch.Tensor,
        absorbed: bool,
    ) -> torch.Tensor:
        batch, seq, _ = x.shape
        end = start + seq
        q_nope, q_pe, latent, k_pe = self._project(x, rope, rope)
        cache_kv[:batch, start:end] = latent
        cache_pe[:batch, start:end] = k_pe
        kv, pe = cache_kv[:batch, :end], cache_pe[:batch, :end]

        wkv_b = self.kv_b(x.dtype)
        if absorbed:
            out = self._absorbed(q_nope, q_pe, kv, pe, wkv_b, start)
        else:
            out = self._expanded(q_nope, q_pe, kv, pe, wkv_b, start)
        return self.o_proj(out.flatten(2))

    def kv_b(self, dtype: torch.dtype) -> torch.Tensor:
        """kv_b_proj as [heads, nope + v, kv_lora] in `dtype`. Absorbed attention needs it dense;
        an FP8 one is dequantised once and kept (K2: 16 MiB per layer), not on every step."""
        if self.kv_b_proj.fmt != "fp8":
            return self.kv_b_proj.dense_weight(dtype).view(self.n_heads, self.nope_dim + self.v_dim, self.kv_rank)
        cached = getattr(self, "_kv_b_dense", None)
        if cached is None or cached.dtype != dtype or cached.device != self.kv_b_proj.weight.device:
            cached = self.kv_b_proj.dense_weight(dtype).view(self.n_heads, self.nope_dim + self.v_dim, self.kv_rank)
            self._kv_b_dense = cached
        return cached

    def _project(self, x: torch.Tensor, q_rope, k_rope) -> tuple[torch.Tensor, ...]:
        """(q_nope, roped q_pe, normalised latent, roped shared key) of x [batch, seq, hidden]."""
        q_nope, q_pe = self._queries(x).split([self.nope_dim, self.rope_dim], dim=-1)
        latent, k_pe = self.kv_a_proj_with_mqa(x).split([self.kv_rank, self.rope_dim], dim=-1)
        return q_nope, apply_rope(q_pe, *q_rope), self.kv_a_layernorm(latent), apply_rope(k_pe, *k_rope)

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, seq, heads, nope + rope], rope not yet applied."""
        batch, seq, _ = x.shape
        q = self.q_proj(x) if hasattr(self, "q_proj") else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        return q.view(batch, seq, self.n_heads, self.nope_dim + self.rope_dim)

    def decode(self, x: torch.Tensor, step: DecodeStep, cache_kv: torch.Tensor, cache_pe: torch.Tensor) -> torch.Tensor:
        """One new token per sequence at device-side `step.positions`: no Python value depends
        on the GPU, so a CUDA graph of it replays for every step."""
        batch = x.shape[0]
        positions, cos, sin = step.positions, step.cos, step.sin
        if use_kernels(x):  # rope, the latent's norm and both cache writes: one launch
            from kimicode.backends.k2.kernels.rope_cache import rope_and_cache

            q = self._queries(x)
            norm = self.kv_a_layernorm
            rope_and_cache(q[:, 0], self.kv_a_proj_with_mqa(x)[:, 0], cos, sin, norm.weight, norm.eps, positions, cache_kv, cache_pe)
            q_nope, q_pe = q.split([self.nope_dim, self.rope_dim], dim=-1)
        else:
            q_nope, q_pe, latent, k_pe = self._project(
                x, (cos.view(batch, 1, 1, -1), sin.view(batch, 1, 1, -1)), (cos.view(batch, 1, -1), sin.view(batch, 1, -1))
            )
            rows = torch.arange(batch, device=x.device)
            cache_kv[rows, positions] = latent[:, 0]
            cache_pe[rows, positions] = k_pe[:, 0]
        kv, pe = cache_kv[:batch], cache_pe[:batch]
        wkv_b = self.kv_b(x.dtype)
        q_latent = torch.einsum("bhd,hdc->bhc", q_nope[:, 0], wkv_b[:, : self.nope_dim])
        if use_kernels(x):
            from kimicode.backends.k2.kernels.mla_decode import mla_decode

            out = mla_decode(q_latent, q_pe[:, 0], kv, pe, step.lengths, self.softmax_scale, out_dtype=x.dtype)
        else:  # the whole cache, later slots masked: shapes fixed whatever the position
            scores = torch.einsum("bhc,btc->bht", q_latent, kv) + torch.einsum("bhr,btr->bht", q_pe[:, 0], pe)
            future = torch.arange(kv.shape[1], device=x.device)[None, :] >= step.lengths[:, None]
            scores = scores.float().masked_fill(future[:, None, :], float("-inf")) * self.softmax_scale
            out = torch.einsum("bht,btc->bhc", scores.softmax(-1).to(x.dtype), kv)
        out = torch.einsum("bhc,hdc->bhd", out, wkv_b[:, self.nope_dim :])
        return self.o_proj(out.flatten(1)).unsqueeze(1)

    def _absorbed(self, q_nope, q_pe, kv, pe, wkv_b, start: int) -> torch.Tensor:
        """Fold kv_b's key half into the query and its value half into the output, so
        attention runs on the latent directly (per-head K and V never exist). The MLA decode
        kernel takes up to KERNEL_TURN_TOKENS new tokens per launch; the torch ops take queries
        in chunks so the fp32 scores stay within SCORES_BUDGET bytes at any context."""
        seq, end = q_nope.shape[1], kv.shape[1]
        q_latent = torch.einsum("bshd,hdc->bshc", q_nope, wkv_b[:, : self.nope_dim])
        if use_kernels(q_latent):  # each new token over the cache up to its own position
            from kimicode.backends.k2.kernels.mla_decode import mla_decode

            parts = []
            for first in range(0, seq, KERNEL_TURN_TOKENS):
                last = min(first + KERNEL_TURN_TOKENS, seq)
                lengths = torch.full((q_latent.shape[0],), start + last, dtype=torch.int32, device=kv.device)
                parts.append(mla_decode(q_latent[:, first:last], q_pe[:, first:last], kv, pe, lengths, self.softmax_scale))
            out = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            return torch.einsum("bshc,hdc->bshd", out.to(q_nope.dtype), wkv_b[:, self.nope_dim :])
        chunk = max(1, SCORES_BUDGET // (q_nope.shape[0] * self.n_heads * end * 4))
        outputs = []
        for first in range(0, seq, chunk):
            last = min(first + chunk, seq)
            scores = torch.einsum("bshc,btc->bsht", q_latent[:, first:last], kv)
            scores = (scores + torch.einsum("bshr,btr->bsht", q_pe[:, first:last], pe)).float() * self.softmax_scale
            if start + first < end - 1:  # some query in the chunk has later tokens to hide
                positions = torch.arange(start + first, start + last, device=kv.device)
                future = torch.arange(end, device=kv.device)[None, :] > positions[:, None]
                scores = scores.masked_fill(future[None, :, None, :], float("-inf"))
            probs = scores.softmax(dim=-1).to(q_nope.dtype)
            outputs.append(torch.einsum("bsht,btc->bshc", probs, kv))
        out = torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]
        return torch.einsum("bshc,hdc->bshd", out, wkv_b[:, self.nope_dim :])

    def _expanded(self, q_nope, q_pe, kv, pe, wkv_b, start: int) -> torch.Tensor:
        """Prefill: expand the latent to per-head keys and values and use fused attention
        (memory-efficient: the [seq, seq] score matrix is never materialised whole). Past
        EXPANDED_BUDGET bytes of keys and values, the context goes a slice at a time."""
        batch, seq, end = q_nope.shape[0], q_nope.shape[1], kv.shape[1]
        if expanded_bytes(self.config, batch, end, q_nope.dtype) > EXPANDED_BUDGET:
            return self._expanded_in_slices(q_nope, q_pe, kv, pe, wkv_b, start)
        keys_values = torch.einsum("btc,hdc->bhtd", kv, wkv_b)
        k_nope, values = keys_values.split([self.nope_dim, self.v_dim], dim=-1)
        keys = torch.cat((k_nope, pe[:, None].expand(-1, self.n_heads, -1, -1)), dim=-1)
        # Fused kernels want one head size for Q, K and V (CPU: 30x faster at 8K tokens).
        values = F.pad(values, (0, keys.shape[-1] - self.v_dim))
        del keys_values, k_nope
        queries = torch.cat((q_nope, q_pe), dim=-1).transpose(1, 2)
        # Query i sits at position start + i: causal aligned to the last key, a mask the fused
        # kernels apply without materialising [seq, end] (from position 0 it is plain causal).
        mask = causal_lower_right(seq, end) if seq > 1 else None
        out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, scale=self.softmax_scale)
        return out[..., : self.v_dim].transpose(1, 2)

    def _expanded_in_slices(self, q_nope, q_pe, kv, pe, wkv_b, start: int) -> torch.Tensor:
        """Expanded attention over a context too long to expand at once: kv_b expands one slice
        of keys at a time (within EXPANDED_BUDGET bytes; the rope key stays shared, not copied
        per head), and the slices' outputs merge exactly by their log-sum-exp. Memory stays
        flat at any context, and each (query, key) pair costs nope + rope + v multiply-adds per
        head against absorbed attention's 2·kv_rank + rope (K2: 320 against 1088)."""
        from kimicode.backends.k2.kernels.mla_prefill import merge_by_lse

        batch, end = q_nope.shape[0], kv.shape[1]
        # The kernel reads the slice in the compute dtype; the torch ops work in fp32 (a bf16
        # product would round the scores before the softmax, and CPUs multiply fp32 faster).
        dtype = q_nope.dtype if use_kernels(q_nope) else torch.float32
        per_key = batch * self.n_heads * (self.nope_dim + self.v_dim) * dtype.itemsize
        span = max(1, EXPANDED_BUDGET // per_key)
        out = lse = None
        for first in range(0, end, span):
            last = min(first + span, end)
            keys_values = torch.einsum("btc,hdc->bthd", kv[:, first:last].to(dtype), wkv_b.to(dtype))
            k_nope, values = keys_values.split([self.nope_dim, self.v_dim], dim=-1)
            part = self._attend_slice(q_nope, q_pe, k_nope, pe[:, first:last], values, start, first)
            out, lse = part if out is None else merge_by_lse(out, lse, *part)
        return out.to(q_nope.dtype)

    def _attend_slice(self, q_nope, q_pe, k_nope, k_pe, values, start: int, key_first: int):
        """(output, log-sum-exp) of the queries over one slice of expanded keys: the Triton
        kernel, or torch ops a chunk of queries at a time within SCORES_BUDGET."""
        from kimicode.backends.k2.kernels import mla_prefill

        if use_kernels(q_nope):
            return mla_prefill.mla_prefill(q_nope, q_pe, k_nope, k_pe, values, self.softmax_scale, start, key_first)
        batch, seq, keys = q_nope.shape[0], q_nope.shape[1], k_nope.shape[1]
        rows = max(1, SCORES_BUDGET // (2 * batch * self.n_heads * keys * 4))  # two score buffers at the peak
        parts = [
            mla_prefill.mla_prefill_reference(q_nope[:, first : first + rows], q_pe[:, first : first + rows], k_nope, k_pe,
                                              values, self.softmax_scale, start + first, key_first)
            for first in range(0, seq, rows)
        ]
        return torch.cat([out for out, _ in parts], dim=1), torch.cat([lse for _, lse in parts], dim=1)


# ---------------------------------------------------------------- mixture of experts

class Router(nn.Module):
    """Sigmoid scores; the bias steers which experts are chosen, not their weights."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.top_k, self.n_group, self.topk_group = config.num_experts_per_tok, config.n_group, config.topk_group
        self.norm_topk_prob, self.scale = config.norm_topk_prob, config.routed_scaling_factor
        # Routing decides discrete choices: keep it in fp32 (as the reference does).
        self.weight = nn.Parameter(torch.empty(config.n_routed_experts, config.hidden_size, dtype=torch.float32), requires_grad=False)
        self.e_score_correction_bias = nn.Parameter(torch.zeros(config.n_routed_experts, dtype=torch.float32), requires_grad=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = F.linear(x.float(), self.weight)
        if use_kernels(x) and self.kernel_can_route():
            from kimicode.backends.k2.kernels.moe import route

            return route(
                logits, self.e_score_correction_bias, self.n_group, self.topk_group, self.top_k, self.norm_topk_prob, self.scale
            )
        return select_experts(
            logits, self.e_score_correction_bias, self.n_group, self.topk_group, self.top_k, self.norm_topk_prob, self.scale
        )


    def kernel_can_route(self) -> bool:
        """The routing kernel splits groups by reshaping: power-of-two groups only."""
        experts = self.weight.shape[0]
        size = experts // self.n_group
        return self.n_group == 1 or (size & (size - 1) == 0 and self.n_group & (self.n_group - 1) == 0)


def select_experts(
    logits: torch.Tensor, bias: torch.Tensor, n_group: int, topk_group: int, top_k: int, normalise: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits [tokens, experts] -> (weights fp32, indices) [tokens, top_k]. The
    reference for the fused routing kernel."""
    scores = logits.float().sigmoid()
    biased = scores + bias
    if n_group > 1:
        grouped = biased.view(logits.shape[0], n_group, -1)
        group_scores = grouped.topk(2, dim=-1).values.sum(-1)
        kept = group_scores.topk(topk_group, dim=-1).indices
        mask = torch.ones_like(group_scores, dtype=torch.bool).scatter_(1, kept, False)
        biased = grouped.masked_fill(mask.unsqueeze(-1), float("-inf")).flatten(1)
    indices = biased.topk(top_k, dim=-1).indices
    weights = scores.gather(1, indices)
    if normalise:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return weights * scale, indices


class Experts(nn.Module):
    """All routed experts of a layer, stacked on the expert axis so a fused kernel can
    read them in place. Formats: dense, block FP8, or INT4 (packed + group scales)."""

    PROJECTIONS = ("gate_proj", "up_proj", "down_proj")

    def __init__(self, config: ModelConfig, formats: Formats):
        super().__init__()
        self.fmt, self.block, self.dtype = formats.experts, formats.fp8_block, formats.dtype
        n, dim, inter = config.n_routed_experts, config.hidden_size, config.moe_intermediate_size
        for name, (out_f, in_f) in zip(self.PROJECTIONS, ((inter, dim), (inter, dim), (dim, inter))):
            for suffix, shape, dtype in self.tensor_specs(self.fmt, out_f, in_f, formats):
                param = nn.Parameter(torch.empty(n, *shape, dtype=dtype), requires_grad=False)
                self.register_parameter(f"{name}_{suffix}", param)

    @staticmethod
    def tensor_specs(fmt: WeightFormat, out_f: int, in_f: int, formats: Formats) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        """(checkpoint suffix, per-expert shape, dtype) of one projection in format `fmt`."""
        if fmt == "int4":
            return [("weight_packed", (out_f, in_f // 8), torch.int32), ("weight_scale", (out_f, in_f // 32), torch.bfloat16)]
        if fmt == "fp8":
            blocks = (-(-out_f // formats.fp8_block[0]), -(-in_f // formats.fp8_block[1]))
            return [("weight", (out_f, in_f), torch.float8_e4m3fn), ("weight_scale_inv", blocks, torch.float32)]
        return [("weight", (out_f, in_f), formats.dtype)]

    def kernel_can_run(self) -> bool:
        _, hidden, inter = self.stored_weights().shape
        return fused_moe_fits(hidden, inter, self.block if self.fmt == "fp8" else None)

    def stored_weights(self):  # -> kernels.moe.ExpertWeights, the tensors as held, for the fused kernels
        from kimicode.backends.k2.kernels.moe import ExpertWeights

        suffix = {"int4": ("weight_packed", "weight_scale"), "fp8": ("weight", "weight_scale_inv"), "dense": ("weight", None)}[self.fmt]
        tensors = [getattr(self, f"{name}_{suffix[0]}") for name in self.PROJECTIONS]
        scales = [getattr(self, f"{name}_{suffix[1]}") for name in self.PROJECTIONS] if suffix[1] else []
        return ExpertWeights(self.fmt, *tensors, *scales, block=self.block)

    def expert_weight(self, projection: str, expert: int, dtype: torch.dtype) -> torch.Tensor:
        if self.fmt == "int4":
            return dequantize_int4(
                getattr(self, f"{projection}_weight_packed")[expert], getattr(self, f"{projection}_weight_scale")[expert], dtype
            )
        weight = getattr(self, f"{projection}_weight")[expert]
        if self.fmt == "fp8":
            return dequantize_fp8_block(weight, getattr(self, f"{projection}_weight_scale_inv")[expert], dtype, self.block)
        return weight.to(dtype)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, *addends: torch.Tensor) -> torch.Tensor:
        """x: [tokens, dim]; weights, indices: [tokens, top_k]. Runs where the experts live.
        With addends (the shared expert's output, the residual), returns the experts' sum plus
        them: the kernels start their fp32 sum from the addends (two are added in their own dtype,
        one rounding, as the reference's adds round), one launch instead of an add each."""
        home = x.device
        device = self.gate_proj_weight.device if self.fmt != "int4" else self.gate_proj_weight_packed.device
        x, weights, indices = x.to(device), weights.to(device), indices.to(device)
        if use_kernels(x) and self.kernel_can_run():
            from kimicode.backends.k2.kernels.moe import fused_moe

            start = None
            if addends:
                first, *rest = (a.to(device) for a in addends)
                start = torch.empty(x.shape, dtype=torch.float32, device=device)
                if rest:  # the first two in one launch, written straight into the fp32 start
                    torch.add(first, rest.pop(0), out=start)
                else:
                    start.copy_(first)
                for more in rest:
                    start += more
            return fused_moe(x, weights, indices.int(), self.stored_weights(), add_to=start).to(home)
        out = self._routed_ops(x, weights, indices).to(home)
        for addend in addends:  # the reference's order and roundings: (routed + shared), then the residual
            out = out + addend
        return out

    def _routed_ops(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x, dtype=torch.float32)
        order = indices.flatten().argsort(stable=True)  # group (token, slot) pairs by expert
        counts = indices.flatten().bincount().tolist()
        offset = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            pairs = order[offset : offset + count]
            offset += count
            tokens = pairs // indices.shape[1]
            h = x[tokens]
            hidden = F.silu(h @ self.expert_weight("gate_proj", expert, x.dtype).T) * (h @ self.expert_weight("up_proj", expert, x.dtype).T)
            y = hidden @ self.expert_weight("down_proj", expert, x.dtype).T
            out.index_add_(0, tokens, y.float() * weights.flatten()[pairs, None])
        return out.to(x.dtype)


class MoE(nn.Module):
    def __init__(self, config: ModelConfig, formats: Formats):
        super().__init__()
        self.gate = Router(config)
        self.experts = Experts(config, formats)
        self.shared_experts = (
            MLP(config.hidden_size, config.moe_intermediate_size * config.n_shared_experts, formats)
            if config.n_shared_experts
            else None
        )

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's output for x [..., dim]; with a residual, residual + that (added where
        the experts sum, not by a launch of its own)."""
        flat = x.reshape(-1, x.shape[-1])
        if self.shared_experts is not None and OVERLAP_SHARED and flat.is_cuda:
            out = self._overlapped(flat).view(x.shape)
            return out if residual is None else residual + out
        weights, indices = self.gate(flat)
        addends = [] if self.shared_experts is None else [self.shared_experts(flat)]
        if residual is not None:
            addends.append(residual.reshape(flat.shape))
        return self.experts(flat, weights, indices, *addends).view(x.shape)

    def _overlapped(self, flat: torch.Tensor) -> torch.Tensor:
        """The shared expert on a second stream while the router and routed experts run on
        this one (a fork and a join, which a CUDA graph captures as two branches)."""
        main = torch.cuda.current_stream(flat.device)
        side = _side_stream(flat.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            shared = self.shared_experts(flat)
        weights, indices = self.gate(flat)
        out = self.experts(flat, weights, indices)
        main.wait_stream(side)
        shared.record_stream(main)  # made on the side stream, last used on this one
        return out + shared


_side_streams: dict[torch.device, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    if device not in _side_streams:
        _side_streams[device] = torch.cuda.Stream(device)
    return _side_streams[device]


# ---------------------------------------------------------------- the stack

class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int, formats: Formats):
        super().__init__()
        self.self_attn = Attention(config, formats)
        self.mlp = MoE(config, formats) if config.is_moe_layer(layer) else MLP(config.hidden_size, config.intermediate_size, formats)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, formats.dtype)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, formats.dtype)

    def forward(self, x, start, rope, cache_kv, cache_pe, absorbed) -> torch.Tensor:
        attended = self.self_attn(self.input_layernorm(x), start, rope, cache_kv, cache_pe, absorbed)
        h, x = self.post_attention_layernorm.after_residual(attended, x)
        return self._mlp_plus(h, x)

    def decode(self, x, step: DecodeStep, cache_kv, cache_pe) -> torch.Tensor:
        attended = self.self_attn.decode(self.input_layernorm(x), step, cache_kv, cache_pe)
        h, x = self.post_attention_layernorm.after_residual(attended, x)
        return self._mlp_plus(h, x)

    def _mlp_plus(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.mlp(h, residual) if isinstance(self.mlp, MoE) else residual + self.mlp(h)


class Transformer(nn.Module):
    """Module names mirror the checkpoint's (minus the leading `model.`), so loading is a lookup."""

    def __init__(self, config: ModelConfig, formats: Formats):
        super().__init__()
        self.config, self.formats = config, formats
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, dtype=formats.dtype)
        self.embed_tokens.weight.requires_grad_(False)
        self.layers = nn.ModuleList(Block(config, i, formats) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, formats.dtype)
        self.lm_head = None if config.tie_word_embeddings else Linear(config.hidden_size, config.vocab_size, formats, "dense")
        self.register_buffer("inv_freq", rope_inv_freq(config), persistent=False)

    def layer_devices(self) -> list[torch.device]:
        return [layer.input_layernorm.weight.device for layer in self.layers]

    def new_cache(self, batch: int, max_len: int) -> LatentCache:
        if max_len > self.config.max_position_embeddings:
            raise ValueError(f"cache of {max_len} tokens exceeds max_position_embeddings {self.config.max_position_embeddings}")
        return LatentCache(self.config, batch, max_len, self.formats.dtype, self.layer_devices())

    @torch.inference_mode()
    def forward(
        self, tokens: torch.Tensor, start: int, cache: LatentCache, absorbed: bool | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """Logits (fp32) for `tokens` [batch, seq] at positions start.. of `cache`; with
        `last_only`, for the last position only ([batch, 1, vocab]): a prefill needs no more,
        and all of them would be seq × vocab × 4 bytes (20 GB at 30K tokens of K2)."""
        batch, seq = tokens.shape
        if start + seq > cache.max_len:
            raise ValueError(f"{start + seq} tokens do not fit the cache of {cache.max_len}")
        if batch > cache.batch:
            raise ValueError(f"batch {batch} exceeds the cache's batch {cache.batch}")
        if absorbed is None:
            absorbed = absorbed_is_cheaper(self.config, seq, start + seq)
        device = self.embed_tokens.weight.device
        positions = torch.arange(start, start + seq, device=device)
        rope = rope_tables(self.config, self.inv_freq, positions)
        x = self.embed_tokens(tokens.to(device))
        for i, layer in enumerate(self.layers):
            layer_device = cache.kv[i].device
            if x.device != layer_device:  # pipeline across GPUs: hand the activations on
                x, rope = x.to(layer_device), (rope[0].to(layer_device), rope[1].to(layer_device))
            x = layer(x, start, rope, cache.kv[i], cache.pe[i], absorbed)
        return self._logits(x[:, -1:] if last_only else x)

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, cache: LatentCache) -> torch.Tensor:
        """Logits (fp32) [batch, 1, vocab] for one token per sequence, `tokens` [batch, 1] at
        `positions` [batch] (device tensors). Capturable in a CUDA graph: nothing here reads
        a GPU value on the host, and the cache's shape does not depend on the position."""
        device = self.embed_tokens.weight.device
        capturing = positions.is_cuda and torch.cuda.is_current_stream_capturing()
        if not capturing and positions.numel() and not 0 <= int(positions.min()) <= int(positions.max()) < cache.max_len:
            raise ValueError(f"positions {positions.tolist()} are outside the cache of {cache.max_len}")
        step = DecodeStep.at(self.config, self.inv_freq, positions.to(device))
        x = self.embed_tokens(tokens.to(device))
        for i, layer in enumerate(self.layers):
            layer_device = cache.kv[i].device
            if x.device != layer_device:
                x, step = x.to(layer_device), step.to(layer_device)
            x = layer.decode(x, step, cache.kv[i], cache.pe[i])
        return self._logits(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.to(self.norm.weight.device))
        head = self.embed_tokens.weight if self.lm_head is None else self.lm_head.dense_weight(x.dtype)
        return F.linear(x.to(head.device), head).float()
