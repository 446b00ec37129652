"""What ptxas allots each kernel at the launches the engine makes at K2 shapes, per GPU architecture.

    kimicode bench ptxas [--arch 90|89|86|80] [--json PATH]
    python bench/k2_gpu.py ptxas ...             # the same from a plain checkout

Runs on any machine, GPU or not. The real launch wrappers (`route`, `fused_moe`, `mla_decode`,
`mla_prefill`, `fp8_linear`) are called on K2-shaped inputs while Triton's driver is one that
only compiles: a JIT hook records each launch's exact specialisation (signature, constexprs,
pointer and stride alignment, warps, stages) and skips the launch. Each distinct one is then compiled for the
architecture (default sm_90a, Hopper) and ptxas's own report read: registers per thread, bytes
spilled, and the shared memory the pipelined loops take. Occupancy follows from the
architecture's per-SM limits.

A kernel that spills runs slowly; one that asks for more shared memory than a block may have
fails at its first launch. Both are caught here, before a GPU is lent. Exit status 1 when any
launch spills or overflows shared memory.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch

@dataclass(frozen=True, slots=True)
class Limits:
    """Per-SM limits of one compute capability (CUDA programming guide, "Technical Specifications")."""

    name: str
    shared_per_sm: int  # bytes
    shared_per_block: int  # the most one block may opt in to
    warps_per_sm: int
    blocks_per_sm: int
    registers_per_sm: int = 65536
    reserved_shared_per_block: int = 1024  # the system's share of each block


ARCHES = {
    90: Limits("sm_90 (H100, H200)", 228 * 1024, 227 * 1024, 64, 32),
    89: Limits("sm_89 (L40S, L4, RTX 4090)", 100 * 1024, 99 * 1024, 48, 24),
    86: Limits("sm_86 (A10, A40, RTX 3090)", 100 * 1024, 99 * 1024, 48, 16),
    80: Limits("sm_80 (A100)", 164 * 1024, 163 * 1024, 64, 32),
}


@dataclass(slots=True)
class Compiled:
    kernel: str
    launches: list[str]
    warps: int
    stages: int
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    shared: int = 0  # bytes per block
    constants: dict[str, object] = field(default_factory=dict)

    arch: int = 90

    @property
    def blocks_per_sm(self) -> int:
        limits = ARCHES[self.arch]
        per_warp = -(-self.registers // 8) * 8 * 32  # registers are allotted 8 per thread at a time
        by_registers = limits.registers_per_sm // max(per_warp * self.warps, 1)
        by_shared = limits.shared_per_sm // (self.shared + limits.reserved_shared_per_block)
        return min(by_registers, by_shared, limits.warps_per_sm // self.warps, limits.blocks_per_sm)

    @property
    def problems(self) -> list[str]:
        found = []
        if self.spill_stores or self.spill_loads:
            found.append(f"spills {self.spill_stores} B")
        limit = ARCHES[self.arch].shared_per_block
        if self.shared > limit:
            found.append(f"shared {self.shared / 1024:.0f} KiB > {limit // 1024} KiB: fails at launch")
        return found


# ---------------------------------------------------------------- capturing launches


@dataclass(frozen=True, slots=True)
class Launch:
    function: object  # the JITFunction
    signature: dict
    constants: dict
    attrs: dict
    warps: int
    stages: int
    ctas: int

    @property
    def key(self) -> str:
        return repr((self.function.__name__, self.signature, self.constants, self.attrs, self.warps, self.stages, self.ctas))


@contextlib.contextmanager
def compile_only(arch: int) -> Iterator[list[Launch]]:
    """Within: kernel launches are recorded (not compiled, not run) into the yielded list."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase

    class CompileOnly(DriverBase):
        @classmethod
        def is_active(cls) -> bool:
            return False

        def map_python_to_cpp_type(self, ty: str) -> str:
            raise NotImplementedError

        def get_current_target(self):
            return GPUTarget("cuda", arch, 32)

        def get_active_torch_device(self):
            return torch.device("cpu")

        def get_benchmarker(self):
            raise NotImplementedError

        def get_current_device(self) -> str:
            # Triton caches a target and binder per device on each kernel: a key no real device
            # has keeps this architecture's entries apart from the GPU's own.
            return f"ptxas-sm{arch}"

        def get_current_stream(self, device=None) -> int:
            return 0

    launches: list[Launch] = []

    def record(*, key, repr, fn, compile, is_manual_warmup, already_compiled) -> bool:
        launches.append(Launch(fn.jit_function, compile["signature"], compile["constants"], compile["configs"][0],
                               compile["num_warps"], compile["num_stages"], compile["num_ctas"]))
        return True  # handled: Triton neither compiles nor launches

    saved_hook, saved_driver = knobs.runtime.jit_cache_hook, triton.runtime.driver._active
    triton.runtime.driver.set_active(CompileOnly())
    knobs.runtime.jit_cache_hook = record
    try:
        yield launches
    finally:
        knobs.runtime.jit_cache_hook = saved_hook
        triton.runtime.driver._active = saved_driver  # None: the machine's own, found on first use


def compile_for(arch: int, launch: Launch) -> tuple[int, int, int, int]:
    """(registers, spill stores, spill loads, shared bytes) of `launch` compiled for `arch`."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    source = ASTSource(launch.function, launch.signature, launch.constants, launch.attrs)
    options = {"num_warps": launch.warps, "num_stages": launch.stages, "num_ctas": launch.ctas}
    log = io.StringIO()
    saved = knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile
    # Triton runs `ptxas -v` and prints its report; from its disk cache there would be none.
    knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile = True, True
    try:
        with contextlib.redirect_stdout(log):
            kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    finally:
        knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile = saved
    text = log.getvalue()
    registers = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if not registers or not spills:
        raise RuntimeError(f"no ptxas report for {launch.function.__name__} (is the compiler log format new?):\n{text[-500:]}")
    return int(registers[1]), int(spills[1]), int(spills[2]), int(kernel.metadata.shared)


# ---------------------------------------------------------------- the engine's launches at K2 shapes


def stand_in(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A meta tensor: shape, strides and dtype are all a launch is specialised on, so K2's
    8 GB of expert weights need not exist."""
    return torch.empty(shape, dtype=dtype, device="meta")


def engine_launches() -> list[tuple[str, Callable[[], object]]]:
    """(label, call) for each launch shape the engine makes at K2 size: decode (1-64 tokens,
    the CUDA-graph cache of 64K tokens) and prefill at 4,096 tokens (a full 8,192-token chunk
    picks the same tiles and compiles to the same kernels)."""
    from dataclasses import replace

    from kimicode.backends.k2.engine import Engine
    from kimicode.backends.k2.kernels import fp8_linear, mla_decode, mla_prefill, moe, norm, rope_cache
    from kimicode.backends.k2.kernels.bench import K2, attention_projections

    s = K2
    experts = moe.ExpertWeights(
        "int4", stand_in((s.experts, s.inter, s.hidden // 8), torch.int32), stand_in((s.experts, s.inter, s.hidden // 8), torch.int32),
        stand_in((s.experts, s.hidden, s.inter // 8), torch.int32), stand_in((s.experts, s.inter, s.hidden // 32), torch.bfloat16),
        stand_in((s.experts, s.inter, s.hidden // 32), torch.bfloat16), stand_in((s.experts, s.hidden, s.inter // 32), torch.bfloat16),
    )
    # K2 0711/0905 and DeepSeek-V3 ship their experts block-FP8, Moonlight in bf16
    fp8_experts = moe.ExpertWeights(
        "fp8", *(stand_in(shape, torch.float8_e4m3fn) for shape in ((s.experts, s.inter, s.hidden),) * 2 + ((s.experts, s.hidden, s.inter),)),
        *(stand_in(shape, torch.float32) for shape in ((s.experts, s.inter // 128, s.hidden // 128),) * 2 + ((s.experts, s.hidden // 128, s.inter // 128),)),
    )
    bf16_experts = moe.ExpertWeights(
        "dense", *(stand_in(shape, torch.bfloat16) for shape in ((s.experts, s.inter, s.hidden),) * 2 + ((s.experts, s.hidden, s.inter),)),
    )
    calls: list[tuple[str, Callable[[], object]]] = []
    for tokens in (*s.decode_tokens, s.prefill_tokens):
        x = torch.randn(tokens, s.hidden, dtype=torch.bfloat16)
        logits = torch.randn(tokens, s.experts)
        ids = logits.topk(s.top_k, dim=-1).indices.int()
        weights = torch.rand(tokens, s.top_k)
        calls.append((f"route {tokens} tok", lambda logits=logits: moe.route(logits, torch.zeros(s.experts), 1, 1, s.top_k, True, 2.8)))
        config = moe.pick_config(tokens, s.top_k, s.hidden, s.inter)
        for label, variant in (("", config), (" W as A", replace(config, weight_first=True))):
            if label and tokens < s.prefill_tokens:
                continue  # the benchmark compares the two tilings at prefill only
            calls.append((f"moe {tokens} tok{label}", lambda x=x, w=weights, i=ids, c=variant: moe.fused_moe(x, w, i, experts, c)))
        for fmt, stored in (("fp8", fp8_experts), ("bf16", bf16_experts)):
            calls.append((f"moe {fmt} {tokens} tok", lambda x=x, w=weights, i=ids, e=stored: moe.fused_moe(x, w, i, e)))
    capacity = Engine.GRAPH_CACHE_TOKENS  # the cache a captured decode step reads
    q_latent = torch.randn(1, s.heads, s.kv_lora, dtype=torch.bfloat16)
    q_pe = torch.randn(1, s.heads, s.rope, dtype=torch.bfloat16)
    kv, pe = stand_in((1, capacity, s.kv_lora), torch.bfloat16), stand_in((1, capacity, s.rope), torch.bfloat16)
    lengths = torch.full((1,), 4096, dtype=torch.int32)
    calls.append(("mla decode 64K cache", lambda: mla_decode.mla_decode(q_latent, q_pe, kv, pe, lengths, 0.1)))
    turn = 180  # an absorbed turn: every new token in one launch
    q_turn, q_pe_turn = torch.randn(1, turn, s.heads, s.kv_lora, dtype=torch.bfloat16), torch.randn(1, turn, s.heads, s.rope, dtype=torch.bfloat16)
    calls.append(("mla 180-token turn", lambda: mla_decode.mla_decode(q_turn, q_pe_turn, kv[:, :30180], pe[:, :30180], lengths, 0.1)))
    # A prefill chunk over a context too long to expand at once: views of q and kv_b's output, as the model passes
    q = stand_in((1, s.prefill_tokens, s.heads, s.nope + s.rope), torch.bfloat16)
    keys_values = stand_in((1, 8 * s.prefill_tokens, s.heads, s.nope + s.v), torch.bfloat16)
    k_pe = stand_in((1, 8 * s.prefill_tokens, s.rope), torch.bfloat16)
    calls.append(("mla prefill 4K over 32K", lambda: mla_prefill.mla_prefill(
        q[..., : s.nope], q[..., s.nope :], keys_values[..., : s.nope], k_pe, keys_values[..., s.nope :], 0.1, 7 * s.prefill_tokens, 0)))
    projections = {**attention_projections(s), "shared gate/up": (s.hidden, s.inter), "shared down": (s.inter, s.hidden),
                   "dense gate/up": (s.hidden, s.dense_inter), "dense down": (s.dense_inter, s.hidden)}
    for name, (n_in, n_out) in projections.items():
        weight = stand_in((n_out, n_in), torch.float8_e4m3fn)
        scale_inv = torch.ones(-(-n_out // 128), -(-n_in // 128))
        for rows in (1, s.prefill_tokens):
            x = torch.randn(rows, n_in, dtype=torch.bfloat16)
            if name.endswith("gate/up") and rows == 1:  # at decode the MLPs pair gate and up in one launch
                pair = (weight, scale_inv)
                calls.append((f"fp8 {name} {rows} tok", lambda x=x, p=pair: fp8_linear.swiglu(x, p, p)))
            else:
                calls.append((f"fp8 {name} {rows} tok", lambda x=x, w=weight, si=scale_inv: fp8_linear.fp8_linear(x, w, si)))
    for rows in (1, s.prefill_tokens):
        x = torch.randn(rows, s.hidden, dtype=torch.bfloat16)
        weight = torch.ones(s.hidden, dtype=torch.bfloat16)
        calls.append((f"rms_norm {rows} tok", lambda x=x, w=weight: norm.rms_norm(x, w, 1e-6)))
        calls.append((f"rms_norm + residual {rows} tok", lambda x=x, w=weight: norm.rms_norm(x, w, 1e-6, x)))
        q_lora = torch.randn(rows, s.q_lora, dtype=torch.bfloat16)
        calls.append((f"rms_norm q_lora {rows} tok", lambda x=q_lora: norm.rms_norm(x, torch.ones(s.q_lora, dtype=torch.bfloat16), 1e-6)))
    q_head = torch.randn(1, s.heads, s.nope + s.rope, dtype=torch.bfloat16)
    kv_a = torch.randn(1, s.kv_lora + s.rope, dtype=torch.bfloat16)
    cos_sin = torch.randn(1, s.rope // 2)
    calls.append(("rope + cache 1 tok", lambda: rope_cache.rope_and_cache(
        q_head, kv_a, cos_sin, cos_sin, torch.ones(s.kv_lora, dtype=torch.bfloat16), 1e-6, torch.zeros(1, dtype=torch.long), kv, pe)))
    return calls


def report(arch: int = 90) -> list[Compiled]:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("the ptxas report compiles the kernels: run it without TRITON_INTERPRET=1")
    by_key: dict[str, tuple[Launch, list[str]]] = {}
    with torch.inference_mode():
        for label, call in engine_launches():
            with compile_only(arch) as launches:
                call()
            for launch in launches:
                by_key.setdefault(launch.key, (launch, []))[1].append(label)
    compiled = []
    for launch, labels in by_key.values():
        names = launch.function.arg_names
        constants = {names[path[0]]: value for path, value in launch.constants.items() if names[path[0]].isupper()}
        row = Compiled(launch.function.__name__.strip("_"), labels, launch.warps, launch.stages, constants=constants, arch=arch)
        row.registers, row.spill_stores, row.spill_loads, row.shared = compile_for(arch, launch)
        print(format_row(row), file=sys.stderr, flush=True)
        compiled.append(row)
    return compiled


COLUMNS = (("kernel", 22), ("launches", 34), ("warps", 6), ("stages", 7), ("regs", 5), ("spills", 7), ("smem", 9),
           ("blocks/SM", 10), ("warps/SM", 9))


def format_row(row: Compiled) -> str:
    launches = ", ".join(row.launches)
    cells = (row.kernel, launches if len(launches) <= 33 else launches[:31] + "..", row.warps, row.stages, row.registers,
             row.spill_stores, f"{row.shared / 1024:.0f} KiB", row.blocks_per_sm, row.blocks_per_sm * row.warps)
    text = "".join(str(cell).ljust(width) for cell, (_, width) in zip(cells, COLUMNS)).rstrip()
    problems = "; ".join(row.problems)
    return f"{text}  {problems}" if problems else text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kimicode bench ptxas", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, choices=sorted(ARCHES), default=90, help="compute capability (default 90: Hopper)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to this file")
    args = parser.parse_args(argv)
    try:
        rows = report(args.arch)
    except RuntimeError as exc:
        print(f"kimicode bench ptxas: {exc}", file=sys.stderr)
        return 2
    header = "".join(name.ljust(width) for name, width in COLUMNS).rstrip()
    print(f"ptxas report for {ARCHES[args.arch].name}: the engine's launches at K2 shapes\n{header}\n{'-' * len(header)}")
    for row in rows:
        print(format_row(row))
    bad = [row for row in rows if row.problems]
    print(f"{len(rows)} compiled kernels; " + (f"PROBLEMS in {len(bad)}" if bad else "none spills, all fit in shared memory"))
    if args.json:
        with open(args.json, "w") as out:
            json.dump([{**asdict(row), "blocks_per_sm": row.blocks_per_sm, "problems": row.problems} for row in rows], out, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
