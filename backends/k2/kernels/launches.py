"""Count the GPU kernels a call would launch, on the CPU, with no GPU.

In a CUDA-graphed decode step each kernel still costs a few microseconds of launch, ramp and
tail however little it reads, and one K2 layer's whole byte floor is about 100 µs: the number
of launches per layer is itself a budget. This counts them where they are decided, in Python:
every aten op that writes memory (a view or a no-op `.to` launches nothing) and every Triton
launch. Triton must run interpreted (TRITON_INTERPRET=1, set before the kernels are imported);
the ops a launch makes inside the interpreter are not counted.

Close to, not equal to, what CUDA runs: a cuBLAS call may itself launch two kernels.
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Ops that only describe memory, or only read sizes: they never launch a kernel.
NO_LAUNCH = frozenset(
    "view _unsafe_view reshape _reshape_alias expand slice select t transpose permute unsqueeze squeeze "
    "as_strided detach alias split split_with_sizes unflatten unbind lift_fresh empty empty_like "
    "empty_strided new_empty is_nonzero _local_scalar_dense sym_size dim numel".split()
)


class _Counter(TorchDispatchMode):
    def __init__(self, launches: collections.Counter):
        super().__init__()
        self.launches = launches
        self.in_triton = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if not self.in_triton and name not in NO_LAUNCH and _writes_memory(name, args, out):
            self.launches[name] += 1
        return out


def _writes_memory(name: str, args, out) -> bool:
    """In place, or a result in storage of its own (`.to` to its own dtype returns its input)."""
    if name.endswith("_"):
        return True
    inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
    results = out if isinstance(out, (tuple, list)) else [out]
    return any(isinstance(r, torch.Tensor) and r.untyped_storage().data_ptr() not in inputs for r in results)


@contextlib.contextmanager
def count_launches() -> Iterator[collections.Counter]:
    """Within the block, a Counter of launches by name: an aten op's, or "triton:<kernel>"."""
    from triton.runtime.interpreter import InterpretedFunction

    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("counting launches needs TRITON_INTERPRET=1 before the kernels are imported")
    launches: collections.Counter = collections.Counter()
    counter = _Counter(launches)
    run = InterpretedFunction.run

    def counted_run(self, *args, **kwargs):
        launches[f"triton:{self.fn.__name__}"] += 1
        counter.in_triton += 1
        try:
            return run(self, *args, **kwargs)
        finally:
            counter.in_triton -= 1

    InterpretedFunction.run = counted_run
    try:
        with counter:
            yield launches
    finally:
        InterpretedFunction.run = run
