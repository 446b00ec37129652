"""`kimicode engine …`: inspect a local checkpoint and smoke-test the in-process engine.

Imports stay light here: `engine info` reads only config.json; torch loads in `engine chat`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

engine_app = typer.Typer(help="The in-process K2 engine: inspect a checkpoint, chat with it.", no_args_is_help=True)


def _config(path: Path):  # -> ModelConfig
    from kimicode.backends.k2.config import CheckpointError, ModelConfig

    try:
        return ModelConfig.from_dir(path)
    except CheckpointError as exc:
        print(f"kimicode: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


@engine_app.command()
def info(path: Annotated[Path, typer.Argument(help="Checkpoint folder (config.json, *.safetensors, tiktoken.model).")]) -> None:
    """Architecture, parameter counts, quantisation and the memory each placement needs."""
    from rich.console import Console
    from rich.table import Table

    from kimicode.backends.k2.config import fused_moe_fits
    from kimicode.backends.k2.inventory import count_parameters, format_bytes, kv_cache_bytes_per_token, weight_bytes

    config = _config(path)
    fp8_block = config.quant.fp8_block if config.quant.method == "fp8" else None
    fused = fused_moe_fits(config.hidden_size, config.moe_intermediate_size, fp8_block)
    counts = count_parameters(config)
    console = Console()
    moe_layers = sum(config.is_moe_layer(i) for i in range(config.num_hidden_layers))
    attention = "q_lora " + (str(config.q_lora_rank) if config.q_lora_rank else "none")
    console.print(
        f"[bold]{path.name}[/] ({config.model_type}): {config.num_hidden_layers} layers "
        f"({config.num_hidden_layers - moe_layers} dense, {moe_layers} MoE), hidden {config.hidden_size}, "
        f"vocab {config.vocab_size}\n"
        f"attention: MLA, {config.num_attention_heads} heads, kv_lora {config.kv_lora_rank}, {attention}, "
        f"rope {config.qk_rope_head_dim} (theta {config.rope_theta:g}"
        + (f", yarn x{config.rope_factor:g}" if config.rope_factor > 1 else "")
        + f"), context {config.max_position_embeddings}\n"
        f"experts: {config.n_routed_experts} routed (top-{config.num_experts_per_tok}, "
        f"{config.n_group} groups, keep {config.topk_group}), {config.n_shared_experts} shared, "
        f"intermediate {config.moe_intermediate_size}\n"
        f"stored as: {config.quant.method if config.quant.method != 'none' else 'bf16'}\n"
        + ("on a GPU: fused MoE kernels, decode as a CUDA graph" if fused else
           "on a GPU: experts in a torch loop, no CUDA graph (widths not multiples of 32)")
    )
    table = Table("parameters", "count")
    for label, value in (("total", counts.total), ("activated per token", counts.activated),
                         ("routed experts", counts.routed_experts), ("everything else", counts.non_expert)):
        table.add_row(label, f"{value / 1e9:.3f} B" if value >= 1e8 else f"{value:,}")
    console.print(table)
    memory = Table("quant", "all on GPU(s)", "GPU with experts on host", "host for experts", title="memory for the weights")
    for quant in ("auto", "int4", "none"):
        rest, experts = weight_bytes(config, quant)
        memory.add_row(quant, format_bytes(rest + experts), format_bytes(rest), format_bytes(experts))
    console.print(memory)
    per_token = kv_cache_bytes_per_token(config)
    console.print(f"KV cache (latent, bf16): {format_bytes(per_token)} per token; "
                  f"{format_bytes(per_token * 32768)} for 32K tokens")


@engine_app.command()
def chat(
    path: Annotated[Path, typer.Argument(help="Checkpoint folder.")],
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    quant: Annotated[str, typer.Option(help="auto | int4 | none.")] = "auto",
    dtype: Annotated[str, typer.Option(help="bfloat16 | float16 | float32.")] = "bfloat16",
    experts_on_cpu: Annotated[bool, typer.Option("--experts-on-cpu", help="Keep routed experts in host memory.")] = False,
    max_tokens: Annotated[int, typer.Option(min=1, help="Most tokens per reply.")] = 512,
    temperature: Annotated[Optional[float], typer.Option(min=0.0, help="Default: the model's.")] = None,
    system: Annotated[Optional[str], typer.Option(help="System prompt.")] = None,
) -> None:
    """A minimal chat loop on stdin/stdout (empty line or EOF ends it), for smoke tests."""
    import asyncio

    from kimicode.backends.base import BackendError, ChatRequest, ReasoningDelta, TextDelta, Usage
    from kimicode.backends.k2.backend import LocalBackend, LocalOptions
    from kimicode.backends.k2.config import CheckpointError
    from kimicode.config import ConfigError, Settings, local_endpoint

    try:
        endpoint = local_endpoint(Settings(backend="local", model_path=str(path)))
        backend = LocalBackend.load(path, endpoint.model, LocalOptions(device, dtype, quant, experts_on_cpu))
    except (ConfigError, CheckpointError, BackendError) as exc:
        print(f"kimicode: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    interactive = sys.stdin.isatty()

    async def reply() -> str:
        text = []
        async for event in backend.stream(ChatRequest(messages, temperature=temperature, max_tokens=max_tokens)):
            if isinstance(event, ReasoningDelta):
                print(f"\x1b[2m{event.text}\x1b[0m" if interactive else event.text, end="", flush=True)
            elif isinstance(event, TextDelta):
                text.append(event.text)
                print(event.text, end="", flush=True)
            elif isinstance(event, Usage):
                print(f"\n[{event.prompt_tokens} prompt ({event.cached_tokens} cached), {event.completion_tokens} new tokens]",
                      file=sys.stderr)
        return "".join(text)

    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line.strip():
            return
        messages.append({"role": "user", "content": line.rstrip("\n")})
        messages.append({"role": "assistant", "content": asyncio.run(reply())})
        print()


bench_app = typer.Typer(
    help="Check the fused K2 kernels against their references, then time them against this GPU's copy bandwidth "
    "and bf16 matmul rate. Without a GPU, --tiny runs the same code on small shapes in Triton's interpreter.",
    no_args_is_help=True,
)

Tiny = Annotated[bool, typer.Option("--tiny", help="Tiny shapes: a dry run (on the CPU, under TRITON_INTERPRET=1).")]
JsonPath = Annotated[Optional[Path], typer.Option("--json", help="Also write the rows to this JSON file.")]
Reps = Annotated[Optional[int], typer.Option(min=1, help="Timed repetitions per case (default 30; 3 with --tiny).")]
Only = Annotated[Optional[str], typer.Option(help="Run only the cases whose name contains this text.")]


def _bench(section: str, tiny: bool, json_path: Optional[Path], reps: Optional[int], only: Optional[str]) -> None:
    from kimicode.backends.k2.kernels import bench  # torch and triton load here, not at `kimicode --help`

    argv = [section, *(["--tiny"] if tiny else []), *(["--json", str(json_path)] if json_path else []),
            *(["--reps", str(reps)] if reps else []), *(["--only", only] if only else [])]
    raise typer.Exit(bench.main(argv))


@bench_app.command()
def kernels(tiny: Tiny = False, json_path: JsonPath = None, reps: Reps = None, only: Only = None) -> None:
    """INT4 MoE decode (1-64 tokens) and prefill, MLA decode, FP8 attention linears, at K2 shapes."""
    _bench("kernels", tiny, json_path, reps, only)


@bench_app.command()
def layer(tiny: Tiny = False, json_path: JsonPath = None, reps: Reps = None, only: Only = None) -> None:
    """One K2 decoder layer, 1 token at 4K context, against its byte floor."""
    _bench("layer", tiny, json_path, reps, only)


@bench_app.command()
def e2e(tiny: Tiny = False, json_path: JsonPath = None, reps: Reps = None, only: Only = None) -> None:
    """Random-weight Moonlight and K2-width models: decode tok/s, transformers' generate(), prefix-cache TTFT."""
    _bench("e2e", tiny, json_path, reps, only)


@bench_app.command()
def ptxas(
    arch: Annotated[int, typer.Option(help="Compute capability: 90 (H100/H200), 89 (L40S, L4), 86 (A10), 80 (A100).")] = 90,
    json_path: JsonPath = None,
) -> None:
    """Compile every kernel launch the engine makes at K2 shapes for a GPU architecture (no GPU
    needed) and report registers, spills, shared memory and occupancy from ptxas."""
    from kimicode.backends.k2.kernels import ptxas_report

    raise typer.Exit(ptxas_report.main([f"--arch={arch}", *(["--json", str(json_path)] if json_path else [])]))
