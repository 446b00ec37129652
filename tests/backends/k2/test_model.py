"""The engine against transformers' DeepseekV3 on tiny random checkpoints (fp32, CPU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from kimicode.backends.k2.engine import Engine  # noqa: E402
from tests.backends.k2.checkpoints import (  # noqa: E402
    YARN_RAMP,
    quantised_copies,
    random_reference,
    save_reference,
    tiny_config,
)

CONFIGS = {
    # n_group > 1, q_lora_rank null, two dense layers, yarn with a hard step
    "grouped-nolora": {},
    # q_lora, ungrouped routing, one dense layer, two shared experts, yarn with a ramp (K2.5-like)
    "lora-ramp": dict(q_lora_rank=24, n_group=1, topk_group=1, first_k_dense_replace=1, n_shared_experts=2,
                      rope_parameters=dict(YARN_RAMP), num_experts_per_tok=2, norm_topk_prob=False),
    # plain rope, no YaRN
    "plain-rope": dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, num_hidden_layers=3),
}


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    ours, reference = ours.detach(), reference.detach()
    return float((ours - reference).abs().max() / reference.abs().max())


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
    """(transformers reference model, our engine) on the same random fp32 weights."""
    config = tiny_config(**CONFIGS[request.param])
    reference = random_reference(config, seed=len(request.param))
    path = save_reference(reference, tmp_path_factory.mktemp(request.param))
    return reference, Engine.from_pretrained(path, dtype=torch.float32, progress=False)


def prompt(length: int, seed: int = 1, vocab: int = 512) -> torch.Tensor:
    return torch.randint(2, vocab, (2, length), generator=torch.Generator().manual_seed(seed))


def test_logits_match_transformers(pair):
    reference, engine = pair
    ids = prompt(40)
    expected = reference(ids).logits
    ours = engine.logits(ids)
    assert ours.shape == expected.shape == (2, 40, 512)
    assert relative_error(ours, expected) <= 1e-4


def test_routing_is_not_trivial(pair):
    """The random bias must change which experts are chosen, or the test above proves little."""
    _, engine = pair
    moe = next(layer.mlp for layer in engine.model.layers if hasattr(layer.mlp, "gate"))
    x = torch.randn(64, engine.config.hidden_size)
    _, chosen = moe.gate(x)
    bias = moe.gate.e_score_correction_bias.clone()
    moe.gate.e_score_correction_bias.zero_()
    try:
        _, unbiased = moe.gate(x)
    finally:
        moe.gate.e_score_correction_bias.copy_(bias)
    assert not torch.equal(chosen.sort(-1).values, unbiased.sort(-1).values)
    assert chosen.unique().numel() > engine.config.num_experts_per_tok


def test_absorbed_and_expanded_attention_agree(pair):
    _, engine = pair
    ids = prompt(24, seed=3)
    cache = engine.model.new_cache(2, 24)
    absorbed = engine.model(ids, 0, cache, absorbed=True)
    expanded = engine.model(ids, 0, engine.model.new_cache(2, 24), absorbed=False)
    assert relative_error(absorbed, expanded) <= 1e-5


def test_cached_decode_matches_full_forward(pair):
    _, engine = pair
    ids = prompt(30, seed=4)[0].tolist()
    full = engine.logits(torch.tensor([ids]))[0]
    engine.reset()
    last, reused = engine.prefill(ids[:10])
    assert reused == 0
    steps = [last]
    for token in ids[10:]:
        steps.append(engine.step(token))
    assert relative_error(torch.stack(steps), full[9:]) <= 1e-5


def test_prefix_reuse_prefills_only_the_new_tokens(pair):
    _, engine = pair
    engine.reset()
    ids = prompt(50, seed=5)[0].tolist()
    engine.prefill(ids[:30])
    logits, reused = engine.prefill(ids[:20] + ids[35:50])  # shares 20 tokens with the cache
    assert reused == 20
    fresh = engine.logits(torch.tensor([ids[:20] + ids[35:50]]))[0, -1]
    assert relative_error(logits, fresh) <= 1e-5
    _, reused = engine.prefill(ids[:20] + ids[35:50])  # the same prompt again: all but the last token
    assert reused == 34


def test_greedy_generation_matches_transformers(pair):
    reference, engine = pair
    ids = prompt(12, seed=6)[:1]
    expected = reference.generate(ids, max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0,
                                  min_new_tokens=16)[0, 12:].tolist()
    engine.reset()
    assert engine.generate(ids[0].tolist(), 16, stop_ids=[]) == expected


def test_generation_stops_on_a_stop_id(pair):
    _, engine = pair
    ids = prompt(8, seed=7)[0].tolist()
    free = engine.generate(ids, 10, stop_ids=[])
    stopped = engine.generate(ids, 10, stop_ids=[free[3]])
    assert stopped == free[: free.index(free[3]) + 1]


def test_sampling_is_reproducible_with_a_seed(pair):
    _, engine = pair
    ids = prompt(8, seed=8)[0].tolist()
    first = engine.generate(ids, 12, temperature=1.0, top_p=0.9, stop_ids=[], seed=11)
    again = engine.generate(ids, 12, temperature=1.0, top_p=0.9, stop_ids=[], seed=11)
    other = engine.generate(ids, 12, temperature=1.0, top_p=0.9, stop_ids=[], seed=12)
    assert first == again
    assert first != other


def test_bad_token_ids_are_refused(pair):
    _, engine = pair
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 512\)"):
        engine.logits(torch.tensor([[1, 512]]))
    with pytest.raises(ValueError, match="exceed the model's context of 256"):
        engine.prefill(list(range(2, 300)))


# ---------------------------------------------------------------- quantised checkpoints

@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    config = tiny_config()
    return save_reference(random_reference(config, seed=21), tmp_path_factory.mktemp("ref"))


@pytest.mark.parametrize("fmt", ["int4", "fp8"])
def test_quantised_checkpoint_matches_its_dequantised_weights(fmt, reference_dir, tmp_path):
    from transformers import DeepseekV3ForCausalLM

    quantised, dense = quantised_copies(reference_dir, tmp_path, fmt)
    reference = DeepseekV3ForCausalLM.from_pretrained(dense, dtype=torch.float32).eval()
    ids = prompt(20, seed=9)
    expected = reference(ids).logits
    kept = Engine.from_pretrained(quantised, dtype=torch.float32, quant="auto", progress=False)
    experts = next(layer.mlp.experts for layer in kept.model.layers if hasattr(layer.mlp, "experts"))
    assert experts.fmt == ("int4" if fmt == "int4" else "fp8")  # "auto" keeps the checkpoint's format
    assert relative_error(kept.logits(ids), expected) <= 1e-4
    dequantised = Engine.from_pretrained(quantised, dtype=torch.float32, quant="none", progress=False)
    assert relative_error(dequantised.logits(ids), expected) <= 1e-4


def test_int4_on_load_equals_an_int4_checkpoint(reference_dir, tmp_path):
    """Quantising bf16/fp32 experts while loading gives exactly the weights an INT4 checkpoint holds."""
    quantised, _ = quantised_copies(reference_dir, tmp_path, "int4")
    on_load = Engine.from_pretrained(reference_dir, dtype=torch.float32, quant="int4", progress=False)
    from_disk = Engine.from_pretrained(quantised, dtype=torch.float32, quant="auto", progress=False)
    ids = prompt(16, seed=10)
    assert torch.equal(on_load.logits(ids), from_disk.logits(ids))


def test_fp8_checkpoint_quantised_to_int4_on_load(reference_dir, tmp_path):
    """FP8 experts are dequantised and requantised to INT4 on load; other linears stay FP8."""
    from kimicode.backends.k2.quant import dequantize_fp8_block, quantize_int4
    from tests.backends.k2.checkpoints import read_tensors

    quantised, _ = quantised_copies(reference_dir, tmp_path, "fp8")
    int4 = Engine.from_pretrained(quantised, dtype=torch.float32, quant="int4", progress=False)
    layer = next(i for i, block in enumerate(int4.model.layers) if hasattr(block.mlp, "experts"))
    experts = int4.model.layers[layer].mlp.experts
    assert experts.fmt == "int4"
    assert int4.model.layers[0].self_attn.kv_a_proj_with_mqa.fmt == "fp8"
    stored = read_tensors(quantised)
    stem = f"model.layers.{layer}.mlp.experts.5.down_proj"
    dense = dequantize_fp8_block(stored[f"{stem}.weight"], stored[f"{stem}.weight_scale_inv"], torch.float32, (32, 32))
    packed, scale = quantize_int4(dense)
    assert torch.equal(experts.down_proj_weight_packed[5], packed)
    assert torch.equal(experts.down_proj_weight_scale[5], scale)
    assert torch.isfinite(int4.logits(prompt(8, seed=12))).all()


def test_bf16_engine_tracks_fp32_as_closely_as_transformers_bf16(reference_dir):
    from transformers import DeepseekV3ForCausalLM

    fp32 = Engine.from_pretrained(reference_dir, dtype=torch.float32, progress=False)
    bf16 = Engine.from_pretrained(reference_dir, dtype=torch.bfloat16, progress=False)
    assert bf16.model.embed_tokens.weight.dtype == torch.bfloat16
    reference = DeepseekV3ForCausalLM.from_pretrained(reference_dir, dtype=torch.bfloat16).eval()
    ids = prompt(32, seed=13)
    exact = fp32.logits(ids)
    with torch.no_grad():
        theirs = reference(ids).logits.float()

    def norm_error(logits):
        return float((logits - exact).norm() / exact.norm())

    ours = bf16.logits(ids)
    assert norm_error(ours) < 0.08
    assert norm_error(ours) < 2.5 * norm_error(theirs)
    assert (ours.argmax(-1) == exact.argmax(-1)).float().mean() > 0.85


# ---------------------------------------------------------------- long contexts and failures

@pytest.fixture(scope="module")
def long_engine(tmp_path_factory):
    config = tiny_config(max_position_embeddings=1024)
    path = save_reference(random_reference(config, seed=31), tmp_path_factory.mktemp("long"))
    return Engine.from_pretrained(path, dtype=torch.float32, progress=False)


def test_many_new_tokens_after_a_cached_prefix_and_cache_growth(long_engine):
    """100 new tokens after 200 cached ones, then decode past the first cache allocation
    (256 slots): all equal a fresh full forward."""
    engine = long_engine
    ids = torch.randint(2, 512, (1, 330), generator=torch.Generator().manual_seed(2))[0].tolist()
    full = engine.logits(torch.tensor([ids]))[0]
    engine.reset()
    engine.prefill(ids[:200])
    logits, reused = engine.prefill(ids[:300])
    assert reused == 200
    assert relative_error(logits, full[299]) <= 1e-5
    steps = [engine.step(token) for token in ids[300:]]
    assert engine._cache.max_len >= 330
    assert relative_error(torch.stack(steps), full[300:]) <= 1e-5


@pytest.mark.parametrize("new", [1, 5, 40])
def test_both_attention_paths_agree_after_a_cached_prefix(long_engine, new):
    """New tokens at positions 70.. attend to the 70 cached ones and causally among themselves,
    by either path (expanded: SDPA with a lower-right causal mask)."""
    net = long_engine.model
    ids = torch.randint(2, 512, (2, 70 + new), generator=torch.Generator().manual_seed(new))
    expected = net(ids, 0, net.new_cache(2, 128))[:, 70:]
    for absorbed in (True, False):
        cache = net.new_cache(2, 128)
        net(ids[:, :70], 0, cache)
        assert relative_error(net(ids[:, 70:], 70, cache, absorbed=absorbed), expected) <= 1e-5


def test_the_attention_path_is_the_cheaper_one_at_k2_shapes():
    from kimicode.backends.k2.config import ModelConfig
    from kimicode.backends.k2.kernels.bench import K2, k2_config
    from kimicode.backends.k2.model import absorbed_is_cheaper, expanded_bytes

    k2 = ModelConfig.from_dict(k2_config(K2, 2))
    assert absorbed_is_cheaper(k2, 1, 30_001)  # decode
    assert not absorbed_is_cheaper(k2, 4096, 4096)  # a prefill from position 0
    # after a long prefix the break-even is kv_rank·(nope+v) / (2·kv_rank + rope − 2·qk_head) = 131072/704
    assert absorbed_is_cheaper(k2, 186, 10**7 + 186) and not absorbed_is_cheaper(k2, 187, 10**7 + 187)
    assert absorbed_is_cheaper(k2, 100, 30_100) and not absorbed_is_cheaper(k2, 500, 30_500)
    per_token = expanded_bytes(k2, 1, 1, torch.bfloat16)
    assert per_token == 64 * (128 + 128 + 2 * 192) * 2


def test_a_long_turn_after_a_prefix_is_expanded_in_slices_past_the_budget(long_engine, monkeypatch):
    """Past EXPANDED_BUDGET the context is expanded a slice at a time and the slices merged by
    log-sum-exp: the same logits as one fused-attention pass, and never the absorbed path."""
    import kimicode.backends.k2.model as model

    calls = []
    for name in ("_absorbed", "_expanded_in_slices"):
        method = getattr(model.Attention, name)
        monkeypatch.setattr(model.Attention, name, lambda self, *a, m=method, n=name: calls.append((n, a[2].shape[1])) or m(self, *a))
    net, config = long_engine.model, long_engine.config
    ids = torch.randint(2, 512, (1, 220), generator=torch.Generator().manual_seed(7))
    cache = net.new_cache(1, 220)
    net(ids[:, :100], 0, cache)
    whole = net(ids[:, 100:220], 100, cache)
    assert calls == []  # within the budget: one fused-attention pass
    per_key = config.num_attention_heads * (config.qk_nope_head_dim + config.v_head_dim) * 4
    monkeypatch.setattr(model, "EXPANDED_BUDGET", 45 * per_key)  # slices of 45 keys: 5 of them over 220
    monkeypatch.setattr(model, "SCORES_BUDGET", 4 * config.num_attention_heads * 45 * 16)  # 16 queries per chunk
    sliced = net(ids[:, 100:220], 100, cache)
    assert calls == [("_expanded_in_slices", 220)] * len(net.layers)
    assert relative_error(sliced, whole) <= 1e-5


def test_sliced_attention_through_the_kernel_matches_the_torch_ops(long_engine, monkeypatch):
    import kimicode.backends.k2.model as model

    net, config = long_engine.model, long_engine.config
    ids = torch.randint(2, 512, (1, 150), generator=torch.Generator().manual_seed(8))
    per_key = config.num_attention_heads * (config.qk_nope_head_dim + config.v_head_dim) * 4
    monkeypatch.setattr(model, "EXPANDED_BUDGET", 64 * per_key)
    results = {}
    for kernels in ("off", "on"):  # "on": the Triton kernel, interpreted
        monkeypatch.setattr(model, "KERNELS", kernels)
        cache = net.new_cache(1, 150)
        net(ids[:, :90], 0, cache, absorbed=False)  # from position 0, in slices too
        results[kernels] = net(ids[:, 90:], 90, cache, absorbed=False)
    monkeypatch.setattr(model, "EXPANDED_BUDGET", 10**12)
    whole = net(ids, 0, net.new_cache(1, 150), absorbed=False)[:, 90:]
    assert relative_error(results["off"], whole) <= 1e-5
    assert relative_error(results["on"], whole) <= 1e-5


def test_absorbed_attention_in_small_chunks_is_unchanged(long_engine, monkeypatch):
    import kimicode.backends.k2.model as model

    ids = torch.randint(2, 512, (1, 120), generator=torch.Generator().manual_seed(3))
    whole = long_engine.model(ids, 0, long_engine.model.new_cache(1, 120), absorbed=True)
    monkeypatch.setattr(model, "SCORES_BUDGET", 4 * 4 * 120 * 7)  # 7 queries per chunk
    chunked = long_engine.model(ids, 0, long_engine.model.new_cache(1, 120), absorbed=True)
    assert relative_error(chunked, whole) <= 1e-6


def test_a_failed_prefill_does_not_poison_the_cache(long_engine, monkeypatch):
    engine = long_engine
    ids = torch.randint(2, 512, (60,), generator=torch.Generator().manual_seed(4)).tolist()
    other = torch.randint(2, 512, (60,), generator=torch.Generator().manual_seed(5)).tolist()
    engine.reset()
    engine.prefill(ids[:50])
    layer = engine.model.layers[3]
    original = type(layer).forward

    def fail(self, *args):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(type(layer), "forward", lambda self, *a: fail(self) if self is layer else original(self, *a))
    with pytest.raises(RuntimeError, match="simulated"):
        engine.prefill(ids[:10] + other)  # rewrites rows 10.. in layers 0-2, then fails
    monkeypatch.undo()
    logits, reused = engine.prefill(ids)
    assert reused == 10
    assert relative_error(logits, engine.logits(torch.tensor([ids]))[0, -1]) <= 1e-5


def test_a_long_prompt_prefills_in_chunks_with_the_same_logits(long_engine, monkeypatch):
    engine = long_engine
    ids = torch.randint(2, 512, (130,), generator=torch.Generator().manual_seed(8)).tolist()
    full = engine.logits(torch.tensor([ids]))[0]
    chunks = []
    hook = engine.model.register_forward_pre_hook(lambda module, args: chunks.append((args[1], args[0].shape[1])))
    monkeypatch.setattr(engine, "PREFILL_CHUNK", 32)
    try:
        engine.reset()
        logits, reused = engine.prefill(ids[:100])
        assert (reused, chunks) == (0, [(0, 32), (32, 32), (64, 32), (96, 4)])
        assert relative_error(logits, full[99]) <= 1e-5
        chunks.clear()
        logits, reused = engine.prefill(ids)  # the new tokens after the cached prefix, chunked too
        assert (reused, chunks) == (100, [(100, 30)])
        assert relative_error(logits, full[129]) <= 1e-5
    finally:
        hook.remove()


def test_an_interrupted_prefill_keeps_its_finished_chunks(long_engine, monkeypatch):
    engine = long_engine
    ids = torch.randint(2, 512, (100,), generator=torch.Generator().manual_seed(9)).tolist()
    monkeypatch.setattr(engine, "PREFILL_CHUNK", 32)
    forward = type(engine.model).forward
    runs = []

    def third_fails(self, tokens, start, *args, **kwargs):
        runs.append(start)
        if len(runs) == 3:
            raise KeyboardInterrupt
        return forward(self, tokens, start, *args, **kwargs)

    engine.reset()
    monkeypatch.setattr(type(engine.model), "forward", third_fails)
    with pytest.raises(KeyboardInterrupt):
        engine.prefill(ids)
    monkeypatch.setattr(type(engine.model), "forward", forward)
    assert engine.cached_ids == ids[:64]
    logits, reused = engine.prefill(ids)
    assert reused == 64
    assert relative_error(logits, engine.logits(torch.tensor([ids]))[0, -1]) <= 1e-5


def test_a_prefill_asked_to_stop_stops_between_chunks(long_engine, monkeypatch):
    from kimicode.backends.k2.engine import PrefillStopped

    engine = long_engine
    ids = torch.randint(2, 512, (100,), generator=torch.Generator().manual_seed(10)).tolist()
    monkeypatch.setattr(engine, "PREFILL_CHUNK", 32)
    engine.reset()
    asked = []
    with pytest.raises(PrefillStopped, match="after 64 of 100 tokens"):
        engine.prefill(ids, should_stop=lambda: asked.append(len(engine.cached_ids)) or len(asked) == 3)
    assert asked == [0, 32, 64]
    assert engine.cached_ids == ids[:64]
    # stopped before its first chunk, a request forgets nothing of the previous one's cache
    with pytest.raises(PrefillStopped, match="after 10 of 20 tokens"):
        engine.prefill(ids[:10] + ids[50:60], should_stop=lambda: True)
    assert engine.cached_ids == ids[:64]


def test_fp8_checkpoint_with_some_layers_left_in_bf16(reference_dir, tmp_path):
    """Quantised checkpoints leave some linears unquantised; each is stored in the module's format."""
    import json

    from transformers import DeepseekV3ForCausalLM

    from tests.backends.k2.checkpoints import read_tensors, write_checkpoint

    quantised, dense = quantised_copies(reference_dir, tmp_path, "fp8")
    tensors = read_tensors(quantised)
    name = "model.layers.1.self_attn.o_proj"
    del tensors[f"{name}.weight_scale_inv"]
    tensors[f"{name}.weight"] = read_tensors(reference_dir)[f"{name}.weight"]
    mixed = write_checkpoint(tensors, json.loads((quantised / "config.json").read_text()), tmp_path / "mixed")
    engine = Engine.from_pretrained(mixed, dtype=torch.float32, progress=False)
    assert engine.model.layers[1].self_attn.o_proj.fmt == "fp8"
    expected_tensors = read_tensors(dense)
    expected_tensors[f"{name}.weight"] = engine.model.layers[1].self_attn.o_proj.dense_weight(torch.float32)
    expected_dir = write_checkpoint(expected_tensors, json.loads((dense / "config.json").read_text()), tmp_path / "expected")
    reference = DeepseekV3ForCausalLM.from_pretrained(expected_dir, dtype=torch.float32).eval()
    ids = prompt(16, seed=14)
    assert relative_error(engine.logits(ids), reference(ids).logits) <= 1e-4


@pytest.mark.parametrize("kernels", ["off", "on"])
def test_graph_safe_decode_matches_the_cached_forward(long_engine, kernels, monkeypatch):
    """`Transformer.decode` (device-side positions, fixed cache shape: what a CUDA graph
    captures) gives the logits of the ordinary cached decode, batch rows at different positions."""
    import kimicode.backends.k2.model as model

    monkeypatch.setattr(model, "KERNELS", kernels)
    net = long_engine.model
    ids = torch.randint(2, 512, (2, 24), generator=torch.Generator().manual_seed(6))
    reference_cache = net.new_cache(2, 64)
    expected = net(ids, 0, reference_cache)[:, -1]
    cache = net.new_cache(2, 64)
    net(ids[:, :23], 0, cache)  # the first 23 tokens of both rows
    got = net.decode(ids[:, 23:], torch.tensor([23, 23]), cache)[:, 0]
    assert relative_error(got, expected) <= 1e-5
    # rows at different positions in one step: row 1 rewinds to position 10
    expected_short = net(ids[1:, :11], 0, net.new_cache(1, 64))[:, -1]
    got = net.decode(torch.stack([ids[0, 23:24], ids[1, 10:11]]), torch.tensor([23, 10]), cache)[:, 0]
    assert relative_error(got[1:], expected_short) <= 1e-5
    before = [t.clone() for t in cache.kv]
    with pytest.raises(ValueError, match=r"positions \[23, 64\] are outside the cache of 64"):
        net.decode(ids[:, 23:], torch.tensor([23, 64]), cache)
    assert all(torch.equal(a, b) for a, b in zip(before, cache.kv))  # nothing was written
