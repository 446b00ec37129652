"""Where each part of the model lives: layers spread over the visible GPUs in order
(a pipeline), routed experts optionally kept in host memory, and the check that it
all fits before a byte is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from kimicode.backends.k2.config import CheckpointError
from kimicode.backends.k2.inventory import format_bytes

GiB = 1024**3
# Leave room on each GPU for activations, the KV cache and the CUDA context.
GPU_USABLE_FRACTION = 0.9


@dataclass(slots=True)
class Placement:
    embed: torch.device
    layers: list[torch.device]
    experts: list[torch.device]  # per layer; differs from `layers` when experts stay on the host
    head: torch.device
    need: dict[str, int] = field(default_factory=dict)  # bytes of weights per device

    def materialise(self, model: nn.Module) -> None:
        """Allocate (uninitialised) every parameter of a meta-device model where it belongs."""
        from kimicode.backends.k2.model import Experts

        model.embed_tokens.to_empty(device=self.embed)
        for layer, device, expert_device in zip(model.layers, self.layers, self.experts):
            for module in layer.modules():
                module.to_empty(device=expert_device if isinstance(module, Experts) else device, recurse=False)
        model.norm.to_empty(device=self.head)
        if model.lm_head is not None:
            model.lm_head.to_empty(device=self.head)


def module_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def expert_bytes(layer: nn.Module) -> int:
    experts = getattr(getattr(layer, "mlp", None), "experts", None)
    return module_bytes(experts) if experts is not None else 0


def available_memory(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: do not block the load


def plan_placement(
    model: nn.Module,
    devices: list[torch.device],
    *,
    experts_on_cpu: bool = False,
    free_memory: dict[str, int] | None = None,
) -> Placement:
    """Assign the embedding, each layer and the head to `devices` in order, filling one
    device before moving to the next. Raises CheckpointError naming the shortfall."""
    cpu = torch.device("cpu")
    free = {str(d): (free_memory or {}).get(str(d), None) for d in [*devices, cpu]}
    for device in [*devices, cpu]:
        if free[str(device)] is None:
            free[str(device)] = available_memory(device)
    capacity = {
        str(d): int(free[str(d)] * (GPU_USABLE_FRACTION if d.type == "cuda" else 1.0)) for d in devices
    }
    offload = experts_on_cpu and any(d.type != "cpu" for d in devices)
    items = [("embedding", module_bytes(model.embed_tokens))]
    host_experts = 0
    for i, layer in enumerate(model.layers):
        moved = expert_bytes(layer) if offload else 0
        host_experts += moved
        items.append((f"layer {i}", module_bytes(layer) - moved))
    head = module_bytes(model.norm) + (module_bytes(model.lm_head) if model.lm_head is not None else 0)
    items.append(("head", head))

    assigned: list[torch.device] = []
    need: dict[str, int] = {}
    slot = 0
    for name, size in items:
        while slot < len(devices) and need.get(str(devices[slot]), 0) + size > capacity[str(devices[slot])]:
            slot += 1
        if slot == len(devices):
            total = sum(s for _, s in items)
            have = sum(capacity.values())
            hint = "" if offload or all(d.type == "cpu" for d in devices) else "; keep the routed experts in host memory (experts_on_cpu)"
            raise CheckpointError(
                f"not enough memory: the weights need {format_bytes(total)} on {_names(devices)}, "
                f"which have {format_bytes(have)} usable ({name} does not fit){hint}, or quantise the experts (quant='int4')"
            )
        device = devices[slot]
        need[str(device)] = need.get(str(device), 0) + size
        assigned.append(device)
    if host_experts:
        need["cpu"] = need.get("cpu", 0) + host_experts
        if need["cpu"] > free["cpu"]:
            raise CheckpointError(
                f"not enough host memory for the routed experts: they need {format_bytes(need['cpu'])}, "
                f"{format_bytes(free['cpu'])} is available"
            )
    layers = assigned[1:-1]
    experts = [cpu if offload else device for device in layers]
    return Placement(assigned[0], layers, experts, assigned[-1], need)


def _names(devices: list[torch.device]) -> str:
    return ", ".join(str(d) for d in devices)

