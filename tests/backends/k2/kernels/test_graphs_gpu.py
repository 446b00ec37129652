"""CUDA-graph decode (needs a GPU; skipped on the CPU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("fmt", ["int4", "fp8", "dense"])
def test_graph_replay_equals_eager_decode(tmp_path, fmt):
    from kimicode.backends.k2.engine import Engine
    from tests.backends.k2.checkpoints import quantised_copies, random_reference, save_reference, tiny_config

    config = tiny_config(moe_intermediate_size=64, n_routed_experts=16, n_group=4, topk_group=2)
    reference = save_reference(random_reference(config, seed=7), tmp_path / "ref")
    folder = reference if fmt == "dense" else quantised_copies(reference, tmp_path, fmt)[0]
    graphed = Engine.from_pretrained(folder, device="cuda", dtype=torch.bfloat16, progress=False)
    eager = Engine(graphed.model, cuda_graphs=False)
    assert graphed.cuda_graphs
    ids = list(range(5, 25))
    assert graphed.generate(ids, 12, stop_ids=[]) == eager.generate(ids, 12, stop_ids=[])
