"""The MLA prefill kernel compiled for the GPU (skipped on the CPU, where the interpreter runs it)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize(("queries", "keys", "query_first", "key_first"), [(300, 1000, 700, 0), (257, 513, 4000, 3700), (300, 362, 62, 0)])  # 62 ≡ block - 2
def test_the_compiled_kernel_matches_the_reference_at_k2_head_widths(queries, keys, query_first, key_first):
    from kimicode.backends.k2.kernels.mla_prefill import mla_prefill, mla_prefill_reference

    g = torch.Generator(device="cuda").manual_seed(queries)
    q = torch.randn(2, queries, 8, 192, generator=g, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(2, keys, 8, 256, generator=g, device="cuda", dtype=torch.bfloat16)
    k_pe = torch.randn(2, keys, 64, generator=g, device="cuda", dtype=torch.bfloat16)
    args = (q[..., :128], q[..., 128:], kv[..., :128], k_pe, kv[..., 128:], 192**-0.5, query_first, key_first)
    out, lse = mla_prefill(*args)
    want_out, want_lse = mla_prefill_reference(*(a.float() if torch.is_tensor(a) else a for a in args))
    seen = ~want_lse.isinf()
    assert torch.equal(seen, ~lse.isinf())
    assert float((out - want_out).abs().max()) < 2e-2  # bf16 probabilities into the second dot
    assert float((lse[seen] - want_lse[seen]).abs().max()) < 2e-2
