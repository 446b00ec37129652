"""The decode step as a CUDA graph: one launch per token instead of hundreds.

At batch 1 a K2 decode step is a few hundred small kernels; launching them from Python
costs more than running them. `Transformer.decode` keeps every position on the device
and the cache's shape fixed, so the whole step is captured once and replayed per token:
the host writes the token and position into static buffers and replays the graph.
"""

from __future__ import annotations

import torch

from kimicode.backends.k2.model import Experts, LatentCache, Transformer, use_kernels


def graphs_supported(model: Transformer) -> bool:
    """One GPU holds everything, and the MoE layers run the fused kernels (whatever the experts'
    format): the torch reference expert loop reads routing results on the host, which a graph
    cannot do."""
    devices = {p.device for p in model.parameters()}
    if len(devices) != 1 or next(iter(devices)).type != "cuda":
        return False
    experts = [module for module in model.modules() if isinstance(module, Experts)]
    return use_kernels(next(model.parameters())) and all(module.kernel_can_run() for module in experts)


class DecodeGraph:
    def __init__(self, model: Transformer, cache: LatentCache):
        device = model.embed_tokens.weight.device
        self.cache = cache
        self.token = torch.zeros(1, 1, dtype=torch.long, device=device)
        # Warm-up and capture write the cache's last slot; it is rewritten before it is ever read.
        self.position = torch.full((1,), cache.max_len - 1, dtype=torch.long, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # compiles the Triton kernels and settles the allocator
                model.decode(self.token, self.position, cache)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = model.decode(self.token, self.position, cache)[0, 0]

    def run(self, token: int, position: int) -> torch.Tensor:
        """Logits [vocab] after `token` at `position` (a copy: the graph's buffer is reused)."""
        if not 0 <= position < self.cache.max_len:
            raise ValueError(f"position {position} is outside the captured cache of {self.cache.max_len}")
        self.token.fill_(token)
        self.position.fill_(position)
        self.graph.replay()
        return self.logits.clone()
