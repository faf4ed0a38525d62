"""The strategy chooser: memory arithmetic from the model's footprint and each GPU's free memory.

A copy of the model fits a GPU when its weights plus the headroom (reserve, activations of the micro-batches in
flight, and on a copy's first GPU the inputs and outputs) do not exceed the GPU's free memory (or the configured
cap). `auto` then picks, in this order:
  - replicas: one copy per GPU, when a copy fits every GPU — no GPU ever waits for another;
  - pipelined: the fewest GPUs per copy that hold it (so the most copies), leftover GPUs spread over the copies
    for headroom, each copy's layers balanced by compute and fed `shards + 1` micro-batches at once;
  - an error naming the numbers when even all GPUs together cannot hold one copy (no CPU offload: too slow).
Everything here is plain arithmetic on numbers, so tests can ask what 4 × 40 GB cards would do with 26B.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vesselseg.infer.config import GIB, InferConfig
from vesselseg.infer.errors import InferError
from vesselseg.infer.footprint import Footprint

log = logging.getLogger(__name__)

PlannedStrategy = Literal["replicas", "sharded", "pipelined", "cpu"]


class Gpu(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    name: str = "GPU"
    total_bytes: int = Field(ge=0)
    free_bytes: int = Field(ge=0)


class Plan(BaseModel):
    """Where the copies of the model go and how many micro-batches each keeps in flight."""

    model_config = ConfigDict(extra="forbid")

    strategy: PlannedStrategy
    groups: list[list[int]] = Field(description="GPU indices of each copy, first GPU first; [] is a CPU copy")
    layers: list[list[int]] = Field(default_factory=list, description="decoder layers per GPU of each copy")
    in_flight: int = Field(ge=1)
    budgets: dict[int, int] = Field(default_factory=dict, description="bytes of weights each GPU may hold")
    reason: str

    @property
    def replicas(self) -> int:
        return len(self.groups)

    @property
    def shards(self) -> int:
        return max(1, len(self.groups[0]))

    def describe(self) -> str:
        where = "CPU" if not self.groups[0] else f"GPUs {self.groups}"
        batches = f"{self.in_flight} micro-batch{'es' if self.in_flight > 1 else ''}"
        text = f"{self.strategy}: {self.replicas} × {self.shards} on {where}, {batches} in flight"
        if self.layers and self.shards > 1:
            text += f", decoder layers per GPU {self.layers[0]}"
        return text


def gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.1f} GiB"


def balance_layers(footprint: Footprint, budgets: list[int]) -> list[int] | None:
    """Decoder layers per GPU of one copy (hub and vision tower on the first), or None if the copy does not fit.

    GPU i holds a contiguous run of layers, so a count per GPU is the whole split. Each layer goes to the GPU
    whose work would stay smallest and that still has room: with equal layers this gives the least work on the
    busiest GPU (which bounds a pipeline's throughput) and spreads the rest evenly. The first GPU, carrying the
    vision tower and SAM2, gets correspondingly fewer layers.
    """
    if not budgets:
        return None
    room = [(budgets[0] - footprint.first_bytes) // footprint.layer_bytes]
    room += [max(0, b) // footprint.layer_bytes for b in budgets[1:]]
    if room[0] < 0 or sum(room) < footprint.n_layers:
        return None
    load = [footprint.hub_cost + footprint.vision_cost] + [0.0] * (len(budgets) - 1)
    counts = [0] * len(budgets)
    for _ in range(footprint.n_layers):
        # Ties go to the later GPU, keeping the first (inputs, outputs, vision, SAM2) lighter.
        gpu = min((i for i in range(len(counts)) if counts[i] < room[i]), key=lambda i: (load[i], -i))
        counts[gpu] += 1
        load[gpu] += footprint.layer_cost
    return counts


def _usable(gpu: Gpu, config: InferConfig, in_flight: int, first: bool) -> int:
    memory = config.memory
    free = gpu.free_bytes if memory.max_memory_gib is None else min(gpu.free_bytes, int(memory.max_memory_gib * GIB))
    headroom = memory.reserve_gib + memory.activation_gib_per_image * config.batch_size * in_flight
    if first:
        headroom += memory.first_device_reserve_gib
    return int(free - headroom * GIB)


def _cpu_plan(config: InferConfig, why: str) -> Plan:
    if config.strategy in ("sharded", "pipelined"):
        raise InferError(f"strategy {config.strategy} spreads a model over GPUs, but {why}")
    copies = config.replicas or 1
    return Plan(
        strategy="replicas" if copies > 1 else "cpu",
        groups=[[] for _ in range(copies)],
        in_flight=config.in_flight or 1,
        reason=f"{why}: {copies} CPU process{'es' if copies > 1 else ''}",
    )


def _replicas_plan(footprint: Footprint, gpus: list[Gpu], config: InferConfig) -> Plan | None:
    # Three: a copy's CPU work per micro-batch (decoding, two resizes, normalising) is about twice its GPU work
    # (benchmarks/infer_profile.py), and threads overlap it with the GPU only while the GIL is released.
    in_flight = config.in_flight or 3
    budgets = {g.index: _usable(g, config, in_flight, first=True) for g in gpus}
    weights = footprint.weight_bytes
    short = [g for g in gpus if budgets[g.index] < weights]
    if short:
        if config.strategy == "replicas":
            g = short[0]
            raise InferError(
                f"strategy replicas: a copy's weights ({gib(weights)}) do not fit GPU {g.index} ({g.name}): "
                f"{gib(budgets[g.index])} usable of {gib(g.free_bytes)} free after the headroom; use sharded or "
                "pipelined, or lower memory.* / batch_size"
            )
        return None
    copies = min(config.replicas or len(gpus), len(gpus))
    return Plan(
        strategy="replicas",
        groups=[[g.index] for g in gpus[:copies]],
        in_flight=in_flight,
        budgets=budgets,
        reason=f"a copy needs {gib(weights)} of weights and every GPU has at least {gib(min(budgets.values()))} "
        f"usable (after {config.memory.reserve_gib:g} GiB reserve, activations of {in_flight} × "
        f"{config.batch_size} images and the first-GPU reserve): {copies} replicas, no GPU waits for another",
    )


def _sharded_plan(footprint: Footprint, gpus: list[Gpu], config: InferConfig, shards: int) -> Plan | None:
    pipelined = config.strategy != "sharded"
    copies = config.replicas or (len(gpus) // shards if pipelined else 1)
    if copies * shards > len(gpus):
        raise InferError(f"{copies} copies × {shards} GPUs need {copies * shards} GPUs; {len(gpus)} are visible")
    in_flight = config.in_flight or (shards + 1 if pipelined else 1)
    groups = [gpus[i * shards : (i + 1) * shards] for i in range(copies)]
    budgets = {g.index: _usable(g, config, in_flight, first=j == 0) for group in groups for j, g in enumerate(group)}
    layers = [balance_layers(footprint, [budgets[g.index] for g in group]) for group in groups]
    if any(split is None for split in layers):
        return None
    return Plan(
        strategy="pipelined" if pipelined else "sharded",
        groups=[[g.index for g in group] for group in groups],
        layers=layers,
        in_flight=in_flight,
        budgets=budgets,
        reason="",
    )


def choose_plan(footprint: Footprint, gpus: list[Gpu], config: InferConfig) -> Plan:
    """The plan `config.strategy` asks for, or for `auto` what the memory arithmetic says; the reason is in the plan."""
    if config.strategy == "cpu":
        return _cpu_plan(config, "strategy cpu")
    if config.gpus is not None:
        missing = sorted(set(config.gpus) - {g.index for g in gpus})
        if missing:
            raise InferError(f"infer.gpus asks for GPUs {missing}; visible: {[g.index for g in gpus]}")
        gpus = [g for g in gpus if g.index in config.gpus]
    if not gpus:
        return _cpu_plan(config, "no GPU is visible")

    if config.strategy in ("auto", "replicas") and config.shards in (None, 1):
        plan = _replicas_plan(footprint, gpus, config)
        if plan is not None:
            return plan

    n = len(gpus)
    if config.shards:
        candidates = [config.shards]
    elif config.replicas and config.strategy != "sharded":
        candidates = [n // config.replicas]
    elif config.strategy == "sharded":
        candidates = [n]
    else:
        candidates = list(range(2 if config.strategy == "auto" else 1, n + 1))
    for shards in candidates:
        if not 1 <= shards <= n:
            raise InferError(f"{shards} GPUs per copy asked for; {n} are visible")
        plan = _sharded_plan(footprint, gpus, config, shards)
        if plan is None:
            continue
        if config.strategy != "sharded" and not config.shards and not config.replicas and n // plan.replicas > shards:
            # Leftover GPUs join the copies: same number of copies, more room for activations.
            plan = _sharded_plan(footprint, gpus, config, n // plan.replicas) or plan
        if config.strategy == "auto":
            why = (
                f"a copy needs {gib(footprint.weight_bytes)} of weights, more than any one GPU holds after the "
                f"headroom; {plan.shards} GPUs per copy is the fewest that hold it"
            )
        else:
            why = f"strategy {config.strategy} as configured"
        plan.reason = (
            f"{why}: {plan.replicas} cop{'ies' if plan.replicas > 1 else 'y'} × {plan.shards} GPUs, decoder layers "
            f"per GPU {plan.layers[0]} balanced by compute (vision tower and SAM2 on the first GPU), usable "
            f"{[gib(plan.budgets[i]) for i in plan.groups[0]]}"
        )
        return plan
    cap = config.memory.max_memory_gib
    free = sum(g.free_bytes if cap is None else min(g.free_bytes, int(cap * GIB)) for g in gpus)
    raise InferError(
        f"a copy of the model ({gib(footprint.weight_bytes)} of weights, {gib(footprint.first_bytes)} of it on the "
        f"first GPU) does not fit {max(candidates, default=n)} GPU(s) ({gib(free)} free in all) with the "
        f"configured headroom; strategy {config.strategy}, batch_size {config.batch_size}, "
        f"memory {config.memory.model_dump()}"
    )


def visible_gpus() -> list[Gpu]:
    """Every CUDA device torch sees, with its free memory now."""
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        gpus.append(Gpu(index=index, name=torch.cuda.get_device_name(index), total_bytes=total, free_bytes=free))
    return gpus


def log_plan(plan: Plan) -> None:
    log.info("inference plan: %s — because %s", plan.describe(), plan.reason)
