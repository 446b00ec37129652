"""One K2-shaped attention layer on the CPU: a turn of new tokens after a cached prefix, by the
absorbed and the expanded path side by side, and which one the engine picks.

    python bench/attention_paths_cpu.py --cached 4096 --new 16 64 186 512 1024 [--slices 4]

With --slices N, a third column: expanded attention as it runs past EXPANDED_BUDGET, the
context expanded N slices apart and merged by log-sum-exp (torch ops on the CPU).

64 heads, kv_lora 512, q_lora 1536, rope 64 (K2's attention), fp32, random weights; median of
--runs timed calls after one warm-up. On a GPU, `kimicode bench layer` times the same pair.
"""

from __future__ import annotations

import argparse
import contextlib
from functools import partial

import torch
from engine_cpu import median_time  # this folder: the script runs as `python bench/...`

from kimicode.backends.k2.config import ModelConfig
from kimicode.backends.k2.kernels.bench import K2, fill_random, k2_config
from kimicode.backends.k2 import model
from kimicode.backends.k2.model import Attention, Formats, absorbed_is_cheaper, rope_inv_freq, rope_tables


def median_seconds(fn, runs: int) -> float:
    fn()  # warm-up
    return median_time(fn, runs)


@contextlib.contextmanager
def expansion_budget(nbytes: int):
    saved, model.EXPANDED_BUDGET = model.EXPANDED_BUDGET, nbytes
    try:
        yield
    finally:
        model.EXPANDED_BUDGET = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cached", type=int, default=4096)
    parser.add_argument("--new", type=int, nargs="+", default=[16, 64, 186, 512, 1024])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slices", type=int, default=0, help="also time expanded attention in this many slices")
    args = parser.parse_args()
    config = ModelConfig.from_dict(k2_config(K2, layers=2))
    attention = Attention(config, Formats(torch.float32))
    fill_random(attention)
    sliced = f" expanded, {args.slices} slices |" if args.slices else ""
    print(f"cached {args.cached}, {torch.get_num_threads()} threads\n| new tokens | absorbed | expanded |{sliced} absorbed / expanded | engine picks |")
    print("|---" * (5 + bool(args.slices)) + "|")
    for new in args.new:
        total = args.cached + new
        kv, pe = torch.randn(1, total, config.kv_lora_rank), torch.randn(1, total, config.qk_rope_head_dim)
        x = torch.randn(1, new, config.hidden_size)
        rope = rope_tables(config, rope_inv_freq(config), torch.arange(args.cached, total))
        with torch.inference_mode():
            absorbed, expanded = (
                median_seconds(partial(attention, x, args.cached, rope, kv, pe, flag), args.runs) for flag in (True, False)
            )
        cells = f"| {new} | {absorbed * 1e3:.0f} ms | {expanded * 1e3:.0f} ms |"
        if args.slices:
            per_key = config.num_attention_heads * (config.qk_nope_head_dim + config.v_head_dim) * 4
            with torch.inference_mode(), expansion_budget(per_key * -(-total // args.slices)):
                cells += f" {median_seconds(partial(attention, x, args.cached, rope, kv, pe, False), args.runs) * 1e3:.0f} ms |"
        picked = "absorbed" if absorbed_is_cheaper(config, new, total) else "expanded"
        print(f"{cells} {absorbed / expanded:.2f} | {picked} |")


if __name__ == "__main__":
    main()
