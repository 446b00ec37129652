"""Checkpoint problems are found from the headers and named; placement fits or says why not."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from kimicode.backends.k2.config import CheckpointError, ModelConfig  # noqa: E402
from kimicode.backends.k2.loader import load_model  # noqa: E402
from kimicode.backends.k2.model import Formats, Transformer  # noqa: E402
from kimicode.backends.k2.placement import GiB, module_bytes, plan_placement  # noqa: E402
from tests.backends.k2.checkpoints import random_reference, read_tensors, tiny_config, write_checkpoint  # noqa: E402

CPU = [torch.device("cpu")]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref")
    random_reference(tiny_config(), seed=3).save_pretrained(path)
    return path


@pytest.fixture
def weights(saved):
    """A fresh (tensors, config) pair each test may edit."""
    return read_tensors(saved), json.loads((saved / "config.json").read_text())


def test_missing_tensor_is_named(weights, tmp_path):
    tensors, config = weights
    del tensors["model.layers.3.mlp.experts.6.up_proj.weight"]
    with pytest.raises(CheckpointError, match=r"missing tensors for 1 weights, e\.g\. model\.layers\.3\.mlp\.experts\.6\.up_proj\.weight"):
        load_model(write_checkpoint(tensors, config, tmp_path), devices=CPU, progress=False)


def test_extra_tensor_is_named_but_mtp_layers_are_ignored(weights, tmp_path):
    tensors, config = weights
    tensors = {**tensors, "model.layers.4.self_attn.o_proj.weight": torch.zeros(2, 2)}  # an MTP layer: ignored
    load_model(write_checkpoint(tensors, config, tmp_path / "mtp"), devices=CPU, progress=False)
    tensors["model.layers.1.mlp.bonus.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match=r"1 unexpected tensors, e\.g\. model\.layers\.1\.mlp\.bonus\.weight"):
        load_model(write_checkpoint(tensors, config, tmp_path / "extra"), devices=CPU, progress=False)


def test_misshaped_tensor_is_named_with_both_shapes(weights, tmp_path):
    tensors, config = weights
    tensors["model.layers.0.self_attn.kv_b_proj.weight"] = torch.zeros(128, 30)
    with pytest.raises(CheckpointError, match=r"model\.layers\.0\.self_attn\.kv_b_proj\.weight has shape \[128, 30\], config\.json implies \[128, 32\]"):
        load_model(write_checkpoint(tensors, config, tmp_path), devices=CPU, progress=False)


@pytest.mark.parametrize(
    ("quant", "message"),
    [
        ({"quant_method": "awq"}, "quant_method 'awq' is not supported"),
        ({"quant_method": "fp8", "fmt": "e5m2"}, "FP8 format 'e5m2' is not supported"),
        ({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"g": {"weights": {
            "num_bits": 8, "type": "int", "symmetric": True, "group_size": 32}}}}, "8-bit symmetric int; only symmetric INT4"),
        ({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"g": {"weights": {
            "num_bits": 4, "type": "int", "symmetric": True, "group_size": 128}}}}, "group_size 128; only 32"),
    ],
)
def test_unsupported_quantisation_is_refused(weights, tmp_path, quant, message):
    tensors, config = weights
    with pytest.raises(CheckpointError, match=message):
        load_model(write_checkpoint(tensors, {**config, "quantization_config": quant}, tmp_path), devices=CPU, progress=False)


def test_not_a_k2_model(weights, tmp_path):
    tensors, config = weights
    with pytest.raises(CheckpointError, match="model_type 'llama' is not a K2-family model"):
        load_model(write_checkpoint(tensors, {**config, "model_type": "llama"}, tmp_path), devices=CPU, progress=False)


def test_too_little_host_memory_names_the_shortfall(weights, tmp_path):
    tensors, config = weights
    path = write_checkpoint(tensors, config, tmp_path)
    with pytest.raises(CheckpointError, match=r"not enough memory: the weights need 553.4 KiB on cpu, which have 1000 B usable"):
        load_model(path, devices=CPU, progress=False, free_memory={"cpu": 1000})


def test_kimi_k25_text_part_is_loaded_from_the_nested_config(weights, tmp_path):
    tensors, config = weights
    nested = {"model_type": "kimi_k25", "text_config": {**config, "model_type": "kimi_k2"}}
    prefixed = {f"language_model.{name}": tensor for name, tensor in tensors.items()}
    prefixed["vision_tower.patch_embed.weight"] = torch.zeros(4, 4)  # the vision part is ignored
    model, _ = load_model(write_checkpoint(prefixed, nested, tmp_path), devices=CPU, dtype=torch.float32, progress=False)
    assert torch.equal(model.norm.weight, tensors["model.norm.weight"])


# ---------------------------------------------------------------- placement (sizes only: no GPU needed)

def meta_model(**overrides) -> Transformer:
    config = ModelConfig.from_dict(tiny_config(num_hidden_layers=8, **overrides).to_dict())
    with torch.device("meta"):
        return Transformer(config, Formats(torch.bfloat16))


def test_layers_fill_gpus_in_order():
    model = meta_model()
    gpus = [torch.device("cuda", 0), torch.device("cuda", 1)]
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    placement = plan_placement(model, gpus, free_memory={"cuda:0": int(total * 0.6), "cuda:1": total, "cpu": 0})
    assert placement.embed == gpus[0] and placement.head == gpus[1]
    switch = placement.layers.index(gpus[1])
    assert set(placement.layers[:switch]) == {gpus[0]} and set(placement.layers[switch:]) == {gpus[1]}
    assert placement.need["cuda:0"] <= total * 0.6 * 0.9
    assert sum(placement.need.values()) == total


def test_experts_on_the_host_make_a_model_fit():
    model = meta_model()
    gpu = [torch.device("cuda", 0)]
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    moe = [i for i, layer in enumerate(model.layers) if hasattr(layer.mlp, "experts")]
    experts = sum(p.numel() * p.element_size() for i in moe for p in model.layers[i].mlp.experts.parameters())
    free = {"cuda:0": int((total - experts) / 0.9) + 1024, "cpu": 10 * GiB}
    assert free["cuda:0"] * 0.9 < total
    with pytest.raises(CheckpointError, match="keep the routed experts in host memory"):
        plan_placement(model, gpu, free_memory=free)
    placement = plan_placement(model, gpu, experts_on_cpu=True, free_memory=free)
    assert all(placement.experts[i] == torch.device("cpu") for i in range(len(model.layers)))
    assert placement.layers[moe[0]] == gpu[0]
    assert placement.need["cpu"] == experts
    with pytest.raises(CheckpointError, match="not enough host memory for the routed experts"):
        plan_placement(model, gpu, experts_on_cpu=True, free_memory={**free, "cpu": 1000})


def test_experts_in_host_memory_compute_the_same(weights, tmp_path):
    """With experts on a different device than the rest (here both CPU, different placement path),
    the result is unchanged: the expert call hands activations across and back."""
    from kimicode.backends.k2.engine import Engine

    tensors, config = weights
    path = write_checkpoint(tensors, config, tmp_path)
    engine = Engine.from_pretrained(path, dtype=torch.float32, experts_on_cpu=True, progress=False)
    plain = Engine.from_pretrained(path, dtype=torch.float32, progress=False)
    ids = torch.randint(2, 512, (1, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(engine.logits(ids), plain.logits(ids))


@pytest.mark.parametrize(("quant", "formats"), [("auto", ("dense", "dense")), ("int4", ("dense", "int4"))])
def test_engine_info_arithmetic_matches_the_built_model(quant, formats):
    """`kimicode engine info` computes sizes from config.json alone; they must equal the real model's."""
    from kimicode.backends.k2.inventory import count_parameters, weight_bytes

    hf = tiny_config(num_hidden_layers=5, q_lora_rank=24, n_shared_experts=2)
    config = ModelConfig.from_dict(hf.to_dict())
    with torch.device("meta"):
        model = Transformer(config, Formats(torch.bfloat16, *formats))
    counts = count_parameters(config)
    if quant == "auto":
        assert counts.total == sum(p.numel() for p in model.parameters())
    experts = sum(module_bytes(layer.mlp.experts) for layer in model.layers if hasattr(layer.mlp, "experts"))
    rest, routed = weight_bytes(config, quant)
    assert (rest, routed) == (module_bytes(model) - experts, experts)
