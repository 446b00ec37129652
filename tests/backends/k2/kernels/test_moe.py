"""Fused MoE kernels (INT4, block-FP8 and dense experts) against their torch references
(Triton's interpreter on the CPU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from kimicode.backends.k2.kernels.moe import (  # noqa: E402
    ExpertWeights,
    MoEConfig,
    align_by_expert,
    fused_moe,
    moe_reference,
    route,
)
from kimicode.backends.k2.model import select_experts  # noqa: E402
from kimicode.backends.k2.quant import quantize_fp8_block, quantize_int4  # noqa: E402

DECODE = MoEConfig(block_m=16, block_n=32, block_k=32, splits=2)
PREFILL = MoEConfig(block_m=32, block_n=32, block_k=32, splits=1)
PREFILL_WEIGHT_FIRST = MoEConfig(block_m=32, block_n=64, block_k=32, splits=1, weight_first=True)


FP8_BLOCK = (32, 32)  # small enough that the tiny shapes span several blocks


def random_experts(n_experts: int, hidden: int, inter: int, seed: int = 0, fmt: str = "int4") -> ExpertWeights:
    g = torch.Generator().manual_seed(seed)

    def stored(out_f, in_f) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight = torch.randn(n_experts, out_f, in_f, generator=g) / in_f**0.5
        if fmt == "int4":
            return quantize_int4(weight)
        if fmt == "fp8":
            per_expert = [quantize_fp8_block(w, FP8_BLOCK) for w in weight]
            return torch.stack([q for q, _ in per_expert]), torch.stack([scale for _, scale in per_expert])
        return weight, None

    (gate, gate_scale), (up, up_scale), (down, down_scale) = stored(inter, hidden), stored(inter, hidden), stored(hidden, inter)
    return ExpertWeights(fmt, gate, up, down, gate_scale, up_scale, down_scale, block=FP8_BLOCK)


def routing(tokens: int, n_experts: int, top_k: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(n_experts, generator=g)[:top_k] for _ in range(tokens)]).int()
    weights = torch.rand(tokens, top_k, generator=g) + 0.1
    return weights, ids


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


@pytest.fixture(params=["direct", "sorted"])
def alignment(request, monkeypatch):
    """Both ways of laying out (token, slot) pairs: one per block (few pairs), or sorted by expert."""
    import kimicode.backends.k2.kernels.moe as moe

    monkeypatch.setattr(moe, "DIRECT_PAIRS", 10_000 if request.param == "direct" else 0)
    return request.param


@pytest.mark.parametrize("config", [DECODE, PREFILL, PREFILL_WEIGHT_FIRST], ids=["decode", "prefill", "weight-first"])
@pytest.mark.parametrize("tokens", [1, 5, 37])
def test_fused_moe_matches_the_reference(config, tokens, alignment):
    experts = random_experts(8, hidden=64, inter=64)
    weights, ids = routing(tokens, 8, 3)
    x = torch.randn(tokens, 64, generator=torch.Generator().manual_seed(tokens))
    assert relative(fused_moe(x, weights, ids, experts, config), moe_reference(x, weights, ids, experts)) < 1e-5


@pytest.mark.parametrize("config", [DECODE, PREFILL, PREFILL_WEIGHT_FIRST], ids=["decode", "prefill", "weight-first"])
@pytest.mark.parametrize("fmt", ["fp8", "dense"])
def test_fp8_and_dense_experts_match_the_reference(config, fmt, alignment):
    """K2 0711/0905 and DeepSeek-V3 store their experts block-FP8, Moonlight dense: the same
    kernels read them in place."""
    experts = random_experts(8, hidden=64, inter=96, seed=10, fmt=fmt)
    weights, ids = routing(9, 8, 3, seed=11)
    x = torch.randn(9, 64, generator=torch.Generator().manual_seed(12))
    assert relative(fused_moe(x, weights, ids, experts, config), moe_reference(x, weights, ids, experts)) < 1e-5


def test_an_fp8_tile_wider_than_the_scale_block_is_refused():
    experts = random_experts(4, hidden=64, inter=64, fmt="fp8")
    weights, ids = routing(2, 4, 2)
    config = MoEConfig(block_m=16, block_n=32, block_k=64, splits=1)
    with pytest.raises(ValueError, match="block_k 64 must divide the FP8 scale block 32"):
        fused_moe(torch.randn(2, 64), weights, ids, experts, config)


def test_experts_without_tokens_and_every_token_on_one_expert(alignment):
    experts = random_experts(16, hidden=64, inter=96, seed=3)
    x = torch.randn(21, 64, generator=torch.Generator().manual_seed(4))
    one = torch.full((21, 1), 11, dtype=torch.int32)  # 15 of 16 experts idle, one gets all 21 tokens
    weights = torch.rand(21, 1, generator=torch.Generator().manual_seed(5))
    for config in (DECODE, PREFILL, PREFILL_WEIGHT_FIRST):
        assert relative(fused_moe(x, weights, one, experts, config), moe_reference(x, weights, one, experts)) < 1e-5


def test_uneven_widths_are_masked(alignment):
    """An intermediate size that is not a multiple of the N block (but of the K blocks)."""
    experts = random_experts(4, hidden=96, inter=64 + 32, seed=6)
    weights, ids = routing(7, 4, 2, seed=7)
    x = torch.randn(7, 96, generator=torch.Generator().manual_seed(8))
    config = MoEConfig(block_m=16, block_n=64, block_k=32, splits=3)
    assert relative(fused_moe(x, weights, ids, experts, config), moe_reference(x, weights, ids, experts)) < 1e-5


def test_alignment_groups_every_pair_once_by_expert(monkeypatch):
    import kimicode.backends.k2.kernels.moe as moe

    monkeypatch.setattr(moe, "DIRECT_PAIRS", 0)
    weights, ids = routing(13, 6, 2, seed=9)
    align = align_by_expert(ids, 6, block_m=4)
    pairs = align.pairs.tolist()
    real = [p for p in pairs if p < align.num_pairs]
    assert sorted(real) == list(range(26))
    flat = ids.flatten().tolist()
    for block, expert in enumerate(align.block_experts.tolist()):
        rows = pairs[block * 4 : (block + 1) * 4]
        if expert < 0:
            assert all(p == align.num_pairs for p in rows)
        else:
            assert all(flat[p] == expert for p in rows if p < align.num_pairs)
            assert any(p < align.num_pairs for p in rows)
    used = [e for e in align.block_experts.tolist() if e >= 0]
    assert used == sorted(used)  # experts in order, each a contiguous run of blocks


@pytest.mark.parametrize(
    ("n_experts", "n_group", "topk_group", "top_k", "normalise"),
    [(16, 4, 2, 3, True), (12, 1, 1, 4, True), (32, 8, 3, 6, False), (384, 1, 1, 8, True)],
)
def test_routing_kernel_matches_select_experts(n_experts, n_group, topk_group, top_k, normalise):
    g = torch.Generator().manual_seed(n_experts)
    logits = torch.randn(9, n_experts, generator=g)
    bias = 0.3 * torch.randn(n_experts, generator=g)
    weights, ids = route(logits, bias, n_group, topk_group, top_k, normalise, 2.5)
    expected_weights, expected_ids = select_experts(logits, bias, n_group, topk_group, top_k, normalise, 2.5)
    order = ids.long().sort(-1)
    expected_order = expected_ids.sort(-1)
    assert torch.equal(order.values, expected_order.values)
    assert torch.allclose(weights.gather(1, order.indices), expected_weights.gather(1, expected_order.indices), atol=1e-6)


def test_few_pairs_get_a_block_each_without_sorting():
    _, ids = routing(3, 8, 2, seed=10)
    align = align_by_expert(ids, 8, block_m=16)
    assert align.direct and align.pairs is None and align.rows == 6 * 16  # the kernels derive the pairs
    assert align.block_experts.tolist() == ids.flatten().tolist()
    assert align.block_experts.data_ptr() == ids.data_ptr()  # route's int32 ids as they are: nothing launched


def test_the_sum_starts_from_add_to(alignment):
    """The shared expert's output and the residual ride in as the fp32 start of the routed sum."""
    experts = random_experts(8, hidden=64, inter=64, seed=12)
    weights, ids = routing(3, 8, 2, seed=13)
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(14))
    start = 5 * torch.randn(3, 64, generator=torch.Generator().manual_seed(15))
    got = fused_moe(x, weights, ids, experts, add_to=start.clone())
    want = moe_reference(x, weights, ids, experts).float() + start
    assert relative(got, want) < 1e-5
    assert relative(got, moe_reference(x, weights, ids, experts)) > 0.5  # the start was really added


def test_an_add_to_the_kernels_cannot_use_is_refused_before_any_launch():
    experts = random_experts(8, hidden=64, inter=64)
    weights, ids = routing(2, 8, 2)
    x = torch.randn(2, 64)
    for bad in (torch.zeros(2, 64, dtype=torch.bfloat16), torch.zeros(2, 32), torch.zeros(64, 2).T):
        with pytest.raises(ValueError, match="add_to must be contiguous fp32 of shape"):
            fused_moe(x, weights, ids, experts, add_to=bad)
