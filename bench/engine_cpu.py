"""The local engine's reference path on the CPU: full prefill vs a prefix-cache turn, and decode.

    python bench/engine_cpu.py [--context 2048] [--new 64] [--runs 3]

A random-weight model with K2's structure at a width a CPU can run (hidden 1024, 6 layers,
16 experts top-4, MLA with kv_lora 256). The prefix-cache turn is what an agent step costs:
the previous request's tokens are cached, only `--new` tokens are prefilled. Medians of --runs.
The GPU numbers (fused kernels, K2 shapes) come from `kimicode bench` with the next issue.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kimicode.backends.k2.config import ModelConfig  # noqa: E402
from kimicode.backends.k2.engine import Engine  # noqa: E402
from kimicode.backends.k2.model import Formats, Transformer  # noqa: E402

CONFIG = {
    "model_type": "kimi_k2", "vocab_size": 8192, "hidden_size": 1024, "intermediate_size": 2816,
    "moe_intermediate_size": 256, "num_hidden_layers": 6, "first_k_dense_replace": 1,
    "num_attention_heads": 8, "q_lora_rank": None, "kv_lora_rank": 256, "qk_nope_head_dim": 64,
    "qk_rope_head_dim": 32, "v_head_dim": 64, "n_routed_experts": 16, "n_shared_experts": 1,
    "num_experts_per_tok": 4, "n_group": 1, "topk_group": 1, "norm_topk_prob": True,
    "routed_scaling_factor": 2.5, "max_position_embeddings": 32768, "rope_theta": 50000.0,
    "rope_scaling": {"type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096,
                     "beta_fast": 1, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
}


def random_engine(dtype: torch.dtype, experts: str) -> Engine:
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_dict(CONFIG), Formats(dtype, "dense", experts))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dtype == torch.int32:
                param.random_(-(2**31), 2**31 - 1)
            elif "scale" in name:
                param.fill_(0.02)
            elif "norm" in name:
                param.fill_(1.0)
            elif param.dim() >= 2:
                param.copy_(torch.randn_like(param, dtype=torch.float32) / param.shape[-1] ** 0.5)
            else:
                param.normal_(0, 0.1)
    return Engine(model)


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--decode", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    ids = torch.randint(0, CONFIG["vocab_size"], (args.context + args.new,), generator=torch.Generator().manual_seed(1)).tolist()
    history, turn = ids[: args.context], ids
    print(f"random K2-structured model (hidden {CONFIG['hidden_size']}, {CONFIG['num_hidden_layers']} layers), "
          f"{torch.get_num_threads()} CPU threads; medians of {args.runs}")
    print(f"{'dtype':<9} {'experts':<8} {'full prefill':>14} {'prefix turn':>14} {'ratio':>7} {'decode tok/s':>13}")
    for dtype, experts in ((torch.float32, "dense"), (torch.bfloat16, "dense"), (torch.bfloat16, "int4")):
        engine = random_engine(dtype, experts)

        def full():
            engine.reset()
            engine.prefill(turn)

        def prefix_turn():
            engine.reset()
            engine.prefill(history)
            started = time.perf_counter()
            _, reused = engine.prefill(turn)
            assert reused == args.context
            return time.perf_counter() - started

        full_s = median_time(full, args.runs)
        turn_s = statistics.median(prefix_turn() for _ in range(args.runs))

        def decode():
            for _ in range(args.decode):
                engine.step(7)

        engine.reset()
        engine.prefill(history)
        decode_s = median_time(decode, 1) / args.decode
        name = str(dtype).removeprefix("torch.")
        print(f"{name:<9} {experts:<8} {full_s * 1e3:>11.0f} ms {turn_s * 1e3:>11.0f} ms {full_s / turn_s:>6.1f}x {1 / decode_s:>13.1f}")


if __name__ == "__main__":
    main()
