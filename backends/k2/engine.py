"""The in-process K2 engine: a loaded model, its latent KV cache, and generation.

One sequence is kept warm: a new request reuses the cache of the longest token
prefix it shares with the previous one, so an agent turn prefills only what is new.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from kimicode.backends.k2.config import CheckpointError
from kimicode.backends.k2.generate import make_generator, sample
from kimicode.backends.k2.model import LatentCache, Transformer
from kimicode.backends.k2.placement import Placement


def resolve_devices(device: str | torch.device) -> list[torch.device]:
    """"cpu", "cuda" (every visible GPU, as a pipeline), "cuda:N" (that GPU), or "auto"."""
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError(f"device {name!r} asked for, but no CUDA GPU is visible (use device='cpu')")
    if name == "cuda":
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [torch.device(name)]


class PrefillStopped(Exception):
    """A prefill was asked to stop; it did so between chunks, and the chunks it finished stay
    cached for the next request."""


class Engine:
    # With CUDA graphs the cache is allocated once at this size (or the model's context).
    GRAPH_CACHE_TOKENS = 65536
    # A long prompt runs in chunks of this many tokens, so activations, MoE buffers and
    # expanded K/V stay bounded whatever its length (K2: ≈ 0.5 GB of MoE rows per chunk).
    PREFILL_CHUNK = 8192

    def __init__(self, model: Transformer, placement: Placement | None = None, path: Path | None = None, *, cuda_graphs: bool = True):
        self.model, self.config, self.placement, self.path = model, model.config, placement, path
        self._cache: LatentCache | None = None
        self._cached_ids: list[int] = []  # the tokens whose latents the cache holds, in order
        from kimicode.backends.k2.graphs import graphs_supported

        self.cuda_graphs = cuda_graphs and graphs_supported(model)
        self._graph = None  # DecodeGraph over the current cache, captured on first use

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        quant: str = "auto",
        *,
        experts_on_cpu: bool = False,
        progress: bool = True,
    ) -> Engine:
        from kimicode.backends.k2.loader import load_model

        model, placement = load_model(
            path, devices=resolve_devices(device), dtype=dtype, quant=quant, experts_on_cpu=experts_on_cpu, progress=progress
        )
        return cls(model, placement, Path(path))

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    # ------------------------------------------------------------ stateless

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Full causal forward from position 0: LongTensor [batch, seq] -> fp32 [batch, seq, vocab]."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {list(input_ids.shape)}")
        self._check_ids(input_ids)
        batch, seq = input_ids.shape
        return self.model(input_ids, 0, self.model.new_cache(batch, seq))

    # ------------------------------------------------------------ one warm sequence

    @property
    def cached_ids(self) -> list[int]:
        return list(self._cached_ids)

    def prefill(self, ids: list[int], should_stop: Callable[[], bool] | None = None) -> tuple[torch.Tensor, int]:
        """Run `ids` through the model, reusing the cached prefix; returns the last
        position's logits [vocab] and how many tokens came from the cache. `should_stop` is
        asked before each chunk: when it says yes, PrefillStopped is raised."""
        if not ids:
            raise ValueError("prefill needs at least one token")
        self._check_ids(torch.tensor(ids))
        reused = _common_prefix(self._cached_ids, ids)
        reused = min(reused, len(ids) - 1)  # the last token must run to give logits
        self._ensure_capacity(len(ids))
        assert self._cache is not None
        for first in range(reused, len(ids), self.PREFILL_CHUNK):
            if should_stop is not None and should_stop():
                raise PrefillStopped(f"stopped after {first} of {len(ids)} tokens")
            # Forget the tail first: if a forward fails halfway, rows past `first` are stale.
            del self._cached_ids[first:]
            chunk = ids[first : first + self.PREFILL_CHUNK]
            logits = self.model(torch.tensor([chunk], device=self.device), first, self._cache, last_only=True)[0, -1]
            self._cached_ids = ids[: first + len(chunk)]  # a later failure keeps this progress
        return logits, reused

    def step(self, token: int) -> torch.Tensor:
        """Append one token to the warm sequence; its logits [vocab] for the next position."""
        self._check_ids(torch.tensor([token]))
        position = len(self._cached_ids)
        self._ensure_capacity(position + 1)
        assert self._cache is not None
        if self.cuda_graphs:
            if self._graph is None or self._graph.cache is not self._cache:
                from kimicode.backends.k2.graphs import DecodeGraph

                self._graph = DecodeGraph(self.model, self._cache)
            logits = self._graph.run(token, position)
        else:
            logits = self.model(torch.tensor([[token]], device=self.device), position, self._cache)[0, -1]
        self._cached_ids.append(token)
        return logits

    def stream(
        self,
        prompt_ids: list[int],
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop_ids: list[int] | None = None,
        seed: int | None = None,
    ) -> Iterator[int]:
        """Yield new token ids as they are chosen; a stop id is yielded, then the stream ends."""
        stops = set(self.default_stop_ids() if stop_ids is None else stop_ids)
        logits, _ = self.prefill(list(prompt_ids))
        generator = make_generator(seed, logits.device)
        for produced in range(max_new_tokens):
            token = sample(logits, temperature, top_p, generator)
            yield token
            if token in stops or produced + 1 == max_new_tokens:
                return
            logits = self.step(token)

    def generate(
        self,
        prompt_ids: list[int],
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop_ids: list[int] | None = None,
        seed: int | None = None,
    ) -> list[int]:
        """The new ids (a final stop id included when generation stopped on one)."""
        return list(self.stream(prompt_ids, max_new_tokens, temperature, top_p, stop_ids, seed))

    def default_stop_ids(self) -> list[int]:
        return [self.config.eos_token_id] if self.config.eos_token_id is not None else []

    def reset(self) -> None:
        self._cache, self._cached_ids, self._graph = None, [], None

    # ------------------------------------------------------------ helpers

    def _check_ids(self, ids: torch.Tensor) -> None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.config.vocab_size}), got {int(ids.min())}..{int(ids.max())}")

    def _ensure_capacity(self, length: int) -> None:
        limit = self.config.max_position_embeddings
        if length > limit:
            raise ValueError(f"{length} tokens exceed the model's context of {limit}")
        if self._cache is not None and self._cache.max_len >= length:
            return
        # Grow geometrically so a long generation reallocates O(log n) times; with CUDA graphs
        # start large, since each new cache means a new capture.
        floor = min(self.GRAPH_CACHE_TOKENS, limit) if self.cuda_graphs else 256
        size = min(max(length, 2 * (self._cache.max_len if self._cache else 0), floor), limit)
        grown = self.model.new_cache(1, size)
        if self._cache is not None:
            kept = len(self._cached_ids)
            for old, new in zip((*self._cache.kv, *self._cache.pe), (*grown.kv, *grown.pe)):
                new[:, :kept] = old[:, :kept]
        self._cache = grown


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


