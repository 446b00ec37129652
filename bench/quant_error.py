"""Error of round-to-nearest INT4 (symmetric, group 32) on K2 expert-shaped weights.

    python bench/quant_error.py [--rows 2048] [--cols 7168] [--seeds 5]

Weights: Gaussian, Student-t with 3 degrees of freedom (heavy tails), and Gaussian with
1% of input columns scaled 20x (outlier channels, as activations-aware papers describe).
For each, the relative weight error ||W - Q(W)|| / ||W|| and the relative output error
||X Wᵀ - X Q(W)ᵀ|| / ||X Wᵀ|| on Gaussian inputs; medians over --seeds draws. Three scale
rules side by side: amax/7 (no clipping), amax/7.5 (the engine's), and a per-group
search over 8 clipping ratios for the lowest squared error (an upper bound on what a
smarter RTN scale buys).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kimicode.backends.k2.quant import dequantize_int4, quantize_int4  # noqa: E402


def weights(kind: str, rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    w = torch.randn(rows, cols, generator=generator)
    if kind == "student-t (df 3)":
        chi2 = torch.randn(rows, cols, 3, generator=generator).pow(2).sum(-1)
        w = w / (chi2 / 3).sqrt()
    elif kind == "outlier columns":
        columns = torch.randperm(cols, generator=generator)[: cols // 100]
        w[:, columns] *= 20
    return (w / w.std()).to(torch.bfloat16)


def rtn(w: torch.Tensor, levels: float) -> torch.Tensor:
    return dequantize_int4(*quantize_int4(w, levels=levels), torch.float32)


def searched(w: torch.Tensor, ratios=(1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65)) -> torch.Tensor:
    """Per group, the clipping ratio of amax whose RTN has the least squared error."""
    groups = w.float().view(w.shape[0], -1, 32)
    amax = groups.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    best, best_err = None, None
    for ratio in ratios:
        scale = (amax * ratio / 7.5).to(torch.bfloat16).float()
        q = (torch.round(groups / scale).clamp(-8, 7)) * scale
        err = (q - groups).pow(2).sum(-1, keepdim=True)
        if best is None:
            best, best_err = q, err
        else:
            better = err < best_err
            best, best_err = torch.where(better, q, best), torch.minimum(err, best_err)
    return best.view(w.shape)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--cols", type=int, default=7168)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    methods = {"amax/7": lambda w: rtn(w, 7.0), "amax/7.5 (engine)": lambda w: rtn(w, 7.5), "clip search": searched}
    print(f"INT4 g32 round-to-nearest on [{args.rows}, {args.cols}] bf16 weights; median of {args.seeds} draws")
    print(f"{'weights':<18} {'scale rule':<18} {'weight rel. err':>16} {'output rel. err':>16}")
    for kind in ("gaussian", "student-t (df 3)", "outlier columns"):
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
        for seed in range(args.seeds):
            generator = torch.Generator().manual_seed(seed)
            w = weights(kind, args.rows, args.cols, generator)
            x = torch.randn(64, args.cols, generator=generator)
            exact = x @ w.float().T
            for name, method in methods.items():
                q = method(w)
                results[name].append((relative(q, w.float()), relative(x @ q.T, exact)))
        for name, values in results.items():
            weight_err = statistics.median(v[0] for v in values)
            output_err = statistics.median(v[1] for v in values)
            print(f"{kind:<18} {name:<18} {weight_err:>16.4f} {output_err:>16.4f}")


if __name__ == "__main__":
    main()
