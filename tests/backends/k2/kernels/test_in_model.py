"""The whole model with every kernel switched in (interpreted) equals the torch reference path."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import kimicode.backends.k2.model as model  # noqa: E402
from kimicode.backends.k2.engine import Engine  # noqa: E402
from tests.backends.k2.checkpoints import quantised_copies, random_reference, save_reference, tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    # hidden and moe_intermediate multiples of 64 so the MoE kernels' K blocks divide them
    config = tiny_config(moe_intermediate_size=64, n_routed_experts=16, n_group=4, topk_group=2)
    reference = save_reference(random_reference(config, seed=41), tmp_path_factory.mktemp("ref"))
    int4, _ = quantised_copies(reference, tmp_path_factory.mktemp("int4"), "int4")
    fp8, _ = quantised_copies(reference, tmp_path_factory.mktemp("fp8"), "fp8")
    return int4, fp8, reference


def fused_formats(monkeypatch) -> list[str]:
    """The expert formats `fused_moe` is called with from now on."""
    import kimicode.backends.k2.kernels.moe as moe

    seen, fused = [], moe.fused_moe
    monkeypatch.setattr(moe, "fused_moe", lambda x, w, i, experts, *a, **k: seen.append(experts.fmt) or fused(x, w, i, experts, *a, **k))
    return seen


def reference_and_kernels(engine, ids, monkeypatch) -> tuple[list, list]:
    monkeypatch.setattr(model, "KERNELS", "off")
    engine.reset()
    expected = [engine.prefill(ids[:6])[0]] + [engine.step(t) for t in ids[6:]]
    monkeypatch.setattr(model, "KERNELS", "on")
    engine.reset()
    got = [engine.prefill(ids[:6])[0]] + [engine.step(t) for t in ids[6:]]  # decode steps use the MLA kernel
    return got, expected


@pytest.mark.parametrize(("which", "fmt"), [(0, "int4"), (1, "fp8"), (2, "dense")], ids=["int4-experts", "fp8-linears-and-experts", "dense"])
def test_kernels_in_the_model_match_the_reference_ops(checkpoints, which, fmt, monkeypatch):
    engine = Engine.from_pretrained(checkpoints[which], dtype=torch.float32, progress=False)
    ids = torch.randint(2, 512, (10,), generator=torch.Generator().manual_seed(3)).tolist()
    seen = fused_formats(monkeypatch)
    got, expected = reference_and_kernels(engine, ids, monkeypatch)
    assert set(seen) == {fmt} and len(seen) == 5 * 2  # 2 MoE layers, a prefill and 4 steps: every one fused
    for a, b in zip(got, expected):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-4


def test_expert_widths_the_kernels_cannot_step_take_the_torch_loop(tmp_path, monkeypatch):
    config = tiny_config(moe_intermediate_size=48)  # not a multiple of 32
    engine = Engine.from_pretrained(save_reference(random_reference(config, seed=42), tmp_path), dtype=torch.float32, progress=False)
    seen = fused_formats(monkeypatch)
    got, expected = reference_and_kernels(engine, torch.arange(2, 12).tolist(), monkeypatch)
    assert seen == []
    for a, b in zip(got, expected):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-4


def test_a_short_turn_after_a_prefix_takes_the_mla_kernel(checkpoints, monkeypatch):
    """A few new tokens after a cached prefix go absorbed; with kernels on, all of them through
    one MLA decode launch per layer (each token causal over the cache), equal to the torch ops."""
    import kimicode.backends.k2.kernels.mla_decode as mla

    engine = Engine.from_pretrained(checkpoints[2], dtype=torch.float32, progress=False)
    net = engine.model
    assert model.absorbed_is_cheaper(engine.config, 5, 30)
    ids = torch.randint(2, 512, (1, 30), generator=torch.Generator().manual_seed(5))
    launches, decode = [], mla.mla_decode
    monkeypatch.setattr(mla, "mla_decode", lambda q, *a, **k: launches.append(tuple(q.shape)) or decode(q, *a, **k))
    turns = {}
    for kernels in ("off", "on"):
        monkeypatch.setattr(model, "KERNELS", kernels)
        cache = net.new_cache(1, 30)
        net(ids[:, :25], 0, cache)
        turns[kernels] = net(ids[:, 25:], 25, cache)
    heads, latent = engine.config.num_attention_heads, engine.config.kv_lora_rank
    assert launches == [(1, 5, heads, latent)] * len(net.layers)
    assert float((turns["on"] - turns["off"]).abs().max() / turns["off"].abs().max()) < 1e-4
    launches.clear()
    monkeypatch.setattr(model, "KERNEL_TURN_TOKENS", 2)  # the turn in launches of 2, 2 and 1 tokens
    cache = net.new_cache(1, 30)
    net(ids[:, :25], 0, cache)
    in_parts = net(ids[:, 25:], 25, cache)
    assert launches == [(1, 2, heads, latent), (1, 2, heads, latent), (1, 1, heads, latent)] * len(net.layers)
    assert float((in_parts - turns["off"]).abs().max() / turns["off"].abs().max()) < 1e-4
