"""Load a K2-family Hugging Face folder into a `Transformer`, one tensor at a time.

The model is built on the meta device, materialised where the placement puts each
part, then filled from memory-mapped safetensors: host memory holds one checkpoint
tensor (and its quantised form) at a time, never the whole model. Every problem
(missing, extra or mis-shaped tensors, an unsupported format, too little memory)
is found from the file headers before any weight is read.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kimicode.backends.k2.config import CheckpointError, ModelConfig
from kimicode.backends.k2.model import Experts, Formats, Linear, Transformer, rope_inv_freq
from kimicode.backends.k2.placement import Placement, plan_placement
from kimicode.backends.k2.quant import dequantize_fp8_block, dequantize_int4, quantize_fp8_block, quantize_int4

_EXPERT = re.compile(r"^(layers\.\d+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)$")
_SUFFIXES = ("weight_scale_inv", "weight_packed", "weight_scale", "weight_shape", "e_score_correction_bias", "weight")
_SAFETENSORS_DTYPES = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32,
    "F8_E4M3": torch.float8_e4m3fn, "I32": torch.int32, "I64": torch.int64,
}


@dataclass(slots=True)
class TensorInfo:
    file: Path
    shape: tuple[int, ...]
    dtype: str


@dataclass(slots=True)
class WeightGroup:
    """One weight of the model and the checkpoint tensors that make it (e.g. weight + scale)."""

    key: str  # model path, e.g. "layers.3.mlp.experts.5.gate_proj" or "norm"
    parts: dict[str, str] = field(default_factory=dict)  # suffix -> checkpoint tensor name
    source: str = "dense"  # "dense" | "fp8" | "int4"


class Checkpoint:
    """The tensor table of a checkpoint folder, read from the safetensors headers only."""

    def __init__(self, path: str | Path, config: ModelConfig):
        from safetensors import safe_open  # the engine extra: imported only when loading

        self.path, self.config = Path(path), config
        files = self._shard_files()
        self.tensors: dict[str, TensorInfo] = {}
        for file in files:
            try:
                with safe_open(file, framework="pt") as handle:
                    for name in handle.keys():
                        view = handle.get_slice(name)
                        self.tensors[name] = TensorInfo(file, tuple(view.get_shape()), view.get_dtype())
            except Exception as exc:  # safetensors raises its own error types
                raise CheckpointError(f"{file}: not a readable safetensors file ({exc})") from exc

    def _shard_files(self) -> list[Path]:
        index = self.path / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as exc:
                raise CheckpointError(f"{index}: not a safetensors index ({exc})") from exc
            files = sorted({self.path / shard for shard in weight_map.values()})
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{self.path}: shards named in the index are missing: {', '.join(missing[:5])}")
            return files
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{self.path}: no *.safetensors files")
        return files

    def model_key(self, name: str) -> str | None:
        """Checkpoint name -> model path of its weight group; None for tensors the engine ignores."""
        prefix = self.config.weight_prefix
        if prefix:
            if not name.startswith(prefix):
                return None  # the vision tower and projector of a multimodal checkpoint
            name = name[len(prefix) :]
        if name.startswith("model."):
            name = name[len("model.") :]
        for suffix in _SUFFIXES:
            if name.endswith("." + suffix):
                name = name[: -len(suffix) - 1]
                break
        else:
            return name
        layer = re.match(r"^layers\.(\d+)\.", name)
        if layer and int(layer.group(1)) >= self.config.num_hidden_layers:
            return None  # multi-token-prediction layers, unused for decoding
        if name.endswith("rotary_emb") or (name == "lm_head" and self.config.tie_word_embeddings):
            return None
        return name

    def groups(self) -> dict[str, WeightGroup]:
        groups: dict[str, WeightGroup] = {}
        for name in self.tensors:
            key = self.model_key(name)
            if key is None:
                continue
            suffix = name.rsplit(".", 1)[-1]
            group = groups.setdefault(key, WeightGroup(key))
            group.parts[suffix] = name
        for group in groups.values():
            if "weight_packed" in group.parts:
                group.source = "int4"
            elif "weight_scale_inv" in group.parts:
                group.source = "fp8"
        return groups


def source_formats(groups: dict[str, WeightGroup], config: ModelConfig) -> tuple[str, str]:
    """(format of the non-expert linears, format of the routed experts) on disk."""
    first = next((i for i in range(config.num_hidden_layers)), None)
    linear = groups.get(f"layers.{first}.self_attn.kv_a_proj_with_mqa") if first is not None else None
    moe_layer = next((i for i in range(config.num_hidden_layers) if config.is_moe_layer(i)), None)
    expert = groups.get(f"layers.{moe_layer}.mlp.experts.0.gate_proj") if moe_layer is not None else None
    return (linear.source if linear else "dense"), (expert.source if expert else "dense")


def target_formats(config: ModelConfig, groups: dict[str, WeightGroup], quant: str, dtype: torch.dtype) -> Formats:
    linear_src, expert_src = source_formats(groups, config)
    block = config.quant.fp8_block
    if quant == "auto":
        return Formats(dtype, linear_src, expert_src, block)
    if quant == "none":
        return Formats(dtype, "dense", "dense", block)
    if quant == "int4":
        return Formats(dtype, linear_src, "int4", block)
    raise CheckpointError(f"quant must be 'auto', 'none' or 'int4', got {quant!r}")


def load_model(
    path: str | Path,
    *,
    devices: list[torch.device],
    dtype: torch.dtype = torch.bfloat16,
    quant: str = "auto",
    experts_on_cpu: bool = False,
    progress: bool = True,
    free_memory: dict[str, int] | None = None,
) -> tuple[Transformer, Placement]:
    config = ModelConfig.from_dir(path)
    checkpoint = Checkpoint(path, config)
    groups = checkpoint.groups()
    formats = target_formats(config, groups, quant, dtype)
    with torch.device("meta"):
        model = Transformer(config, formats)
    expected = _expected_groups(model)
    _check_tensors(checkpoint, groups, expected)

    placement = plan_placement(model, devices, experts_on_cpu=experts_on_cpu, free_memory=free_memory)
    placement.materialise(model)
    model.inv_freq = rope_inv_freq(config).to(placement.embed)  # to_empty left it uninitialised
    _stream_weights(checkpoint, groups, expected, formats, progress)
    return model, placement


# ---------------------------------------------------------------- what the model expects


@dataclass(slots=True)
class Destination:
    module: nn.Module
    kind: str  # "linear" | "expert" | "param"
    projection: str = ""  # for "expert"
    expert: int = 0
    shape: tuple[int, ...] = ()  # the real (dequantised) shape of the weight


def _expected_groups(model: Transformer) -> dict[str, Destination]:
    expected: dict[str, Destination] = {}
    for path, module in model.named_modules():
        if isinstance(module, Linear):
            expected[path] = Destination(module, "linear", shape=tuple(module.weight.shape))
        elif isinstance(module, Experts):
            for name in module.PROJECTIONS:
                inter, dim = model.config.moe_intermediate_size, model.config.hidden_size
                shape = (dim, inter) if name == "down_proj" else (inter, dim)
                for e in range(model.config.n_routed_experts):
                    expected[f"{path}.{e}.{name}"] = Destination(module, "expert", projection=name, expert=e, shape=shape)
        elif any(True for _ in module.parameters(recurse=False)):  # norms, embedding, router
            expected[path] = Destination(module, "param", shape=tuple(module.weight.shape))
    return expected


def _check_tensors(checkpoint: Checkpoint, groups: dict[str, WeightGroup], expected: dict[str, Destination]) -> None:
    problems: list[str] = []
    wanted = set(expected)
    missing = sorted(wanted - groups.keys())
    if missing:
        problems.append(f"missing tensors for {len(missing)} weights, e.g. {', '.join(_checkpoint_name(k) for k in missing[:3])}")
    extra = sorted(groups.keys() - wanted)
    if extra:
        names = [next(iter(groups[k].parts.values())) for k in extra[:3]]
        problems.append(f"{len(extra)} unexpected tensors, e.g. {', '.join(names)}")
    for key in sorted(wanted & groups.keys()):
        problem = _check_group(checkpoint, groups[key], expected[key])
        if problem:
            problems.append(problem)
            if len(problems) >= 6:
                break
    if problems:
        raise CheckpointError(f"{checkpoint.path}: the checkpoint does not match config.json: " + "; ".join(problems))


def _checkpoint_name(key: str) -> str:
    return ("" if key == "lm_head" else "model.") + key + ".weight"


def _check_group(checkpoint: Checkpoint, group: WeightGroup, dest: Destination) -> str | None:
    info = {suffix: checkpoint.tensors[name] for suffix, name in group.parts.items()}
    if dest.kind == "param":
        if dest.module.__class__.__name__ == "Router" and "e_score_correction_bias" not in group.parts:
            return f"{group.key}: the router has no e_score_correction_bias"
        if "weight" not in info:
            return f"{group.key}: no weight tensor"
        if info["weight"].shape != dest.shape:
            return f"{group.parts['weight']} has shape {list(info['weight'].shape)}, config.json implies {list(dest.shape)}"
        bias = info.get("e_score_correction_bias")
        if bias is not None and bias.shape != (dest.shape[0],):
            return f"{group.parts['e_score_correction_bias']} has shape {list(bias.shape)}, expected [{dest.shape[0]}]"
        return None
    out_f, in_f = dest.shape
    if group.source == "int4":
        need = {"weight_packed": (out_f, in_f // 8), "weight_scale": (out_f, in_f // 32), "weight_shape": (2,)}
    elif group.source == "fp8":
        block = checkpoint.config.quant.fp8_block
        need = {"weight": (out_f, in_f), "weight_scale_inv": (-(-out_f // block[0]), -(-in_f // block[1]))}
    else:
        need = {"weight": (out_f, in_f)}
    for suffix, shape in need.items():
        if suffix not in info:
            return f"{group.key}: {group.source} weight without its {suffix} tensor"
        if info[suffix].shape != shape:
            return f"{group.parts[suffix]} has shape {list(info[suffix].shape)}, config.json implies {list(shape)}"
    if group.source == "int4" and in_f % 32:
        return f"{group.key}: INT4 needs in_features divisible by 32, got {in_f}"
    if group.source == "int4" and dest.kind == "linear":
        return f"{group.parts['weight_packed']}: INT4 is only supported for routed experts"
    return None


# ---------------------------------------------------------------- streaming


def _stream_weights(
    checkpoint: Checkpoint,
    groups: dict[str, WeightGroup],
    expected: dict[str, Destination],
    formats: Formats,
    progress: bool,
) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = defaultdict(list)
    for name, info in checkpoint.tensors.items():
        if checkpoint.model_key(name) is not None:
            by_file[info.file].append(name)
    total = sum(_nbytes(checkpoint.tensors[n]) for names in by_file.values() for n in names)
    pending: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)  # parts of groups split across shards
    columns = (TextColumn("loading {task.fields[shard]}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    from rich.console import Console

    # stderr only: stdout may carry an answer (headless) or protocol frames (ACP).
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task("load", total=total, shard="")
        for file, names in sorted(by_file.items()):
            bar.update(task, shard=file.name)
            with safe_open(file, framework="pt") as handle:
                for name in names:
                    key = checkpoint.model_key(name)
                    assert key is not None
                    group = groups[key]
                    parts = pending[key]
                    parts[name.rsplit(".", 1)[-1]] = handle.get_tensor(name)
                    if parts.keys() >= group.parts.keys():
                        _store(group, pending.pop(key), expected, formats)
                    bar.advance(task, _nbytes(checkpoint.tensors[name]))
    if pending:  # cannot happen after _check_tensors; a guard against silent half-loads
        raise CheckpointError(f"incomplete weights after loading: {', '.join(list(pending)[:3])}")


def _nbytes(info: TensorInfo) -> int:
    count = 1
    for size in info.shape:
        count *= size
    return count * _SAFETENSORS_DTYPES.get(info.dtype, torch.float32).itemsize


def _dense(group: WeightGroup, parts: dict[str, torch.Tensor], block: tuple[int, int]) -> torch.Tensor:
    """The weight in full precision (fp32 when quantised on disk, else as stored)."""
    if group.source == "int4":
        return dequantize_int4(parts["weight_packed"], parts["weight_scale"], torch.float32)
    if group.source == "fp8":
        return dequantize_fp8_block(parts["weight"], parts["weight_scale_inv"], torch.float32, block)
    return parts["weight"]


@torch.no_grad()
def _store(group: WeightGroup, parts: dict[str, torch.Tensor], expected: dict[str, Destination], formats: Formats) -> None:
    dest = expected[group.key]
    if dest.kind == "param":
        dest.module.weight.copy_(parts["weight"])
        if "e_score_correction_bias" in parts:
            dest.module.e_score_correction_bias.copy_(parts["e_score_correction_bias"])
        return
    if group.source == "int4":
        real_shape = tuple(int(v) for v in parts["weight_shape"].tolist())
        if real_shape != dest.shape:
            raise CheckpointError(f"{group.parts['weight_shape']} says {list(real_shape)}, config.json implies {list(dest.shape)}")
    # The stored form of this weight, converted to the module's format when they differ
    # (a checkpoint may leave some layers unquantised, or quant= asks for another format).
    target = dest.module.fmt
    if target == group.source and target in ("int4", "fp8"):
        stored = {suffix: tensor for suffix, tensor in parts.items() if suffix != "weight_shape"}
    elif target == "int4":
        stored = dict(zip(("weight_packed", "weight_scale"), quantize_int4(_dense(group, parts, formats.fp8_block))))
    elif target == "fp8":
        stored = dict(zip(("weight", "weight_scale_inv"), quantize_fp8_block(_dense(group, parts, formats.fp8_block), formats.fp8_block)))
    else:
        stored = {"weight": _dense(group, parts, formats.fp8_block)}
    for suffix, tensor in stored.items():
        if dest.kind == "linear":
            getattr(dest.module, suffix).copy_(tensor)
        else:
            getattr(dest.module, f"{dest.projection}_{suffix}")[dest.expert].copy_(tensor)
