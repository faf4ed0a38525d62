"""`FinetuneConfig`: everything that decides a fine-tuning run, as data.

Batch sizes are global: `global_batch_size` samples per optimizer step, split into micro-batches of
`micro_batch_size` over the ranks, with gradient accumulation making up the rest. The data order is a function of
the seed and the step only, so the same config gives the same loss curve on 1, 2 or 8 ranks (see data.py).
The run key (the object-store folder of a run's checkpoints) hashes the fields that change what is trained;
`OPERATIONAL_FIELDS` (how often to log, save or validate, how many processes) do not enter it, so a run
killed and restarted with another logging interval or process count still resumes.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from vesselseg.config import ConfigModel
from vesselseg.finetune.errors import TrainingError

Precision = Literal["bf16", "fp32"]


def gpu_default(setting: bool | None, on_gpu: bool) -> bool:
    """The value of a switch whose null means "on GPUs, off on the CPU" (`fused_adam`, `fused_encoder_gelu`)."""
    return on_gpu if setting is None else setting


# Fields that change neither the weights nor the published result: excluded from the run key.
# An Adam beta of 1 or more never forgets; below 0 it is not a moving average.
Beta = Annotated[float, Field(ge=0, lt=1)]

OPERATIONAL_FIELDS = frozenset(
    {"resume", "checkpoint_every", "keep_checkpoints", "log_every", "num_workers", "cpu_processes", "gpus", "val_every"}
)


class AugmentConfig(ConfigModel):
    """Fundus augmentation, drawn per sample from (seed, step, position in the global batch).

    Geometry (flips, rotation) moves image and mask together, the mask with nearest neighbour; colour jitter
    touches the image only.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.5, ge=0, le=1, description="probability of a vertical flip")
    rotation_deg: float = Field(15.0, ge=0, le=180, description="rotation drawn uniformly in ±rotation_deg")
    brightness: float = Field(0.2, ge=0, lt=1, description="brightness factor drawn in 1 ± brightness")
    contrast: float = Field(0.2, ge=0, lt=1, description="contrast factor drawn in 1 ± contrast")
    saturation: float = Field(0.2, ge=0, lt=1, description="saturation factor drawn in 1 ± saturation")
    hue: float = Field(0.02, ge=0, le=0.5, description="hue shift drawn in ± hue turns")


class Sam2Geometry(ConfigModel):
    """A preset's SAM2 input size and Hiera patch stride; None keeps the preset's (base_model.with_sam2_geometry)."""

    model_config = ConfigDict(extra="forbid")

    image_size: int | None = Field(None, ge=64, le=8192, description="square input, a multiple of 8 × the patch stride")
    patch_stride: int | None = Field(None, ge=2, description="Hiera's patch-embedding stride (SAM2: 4)")

    @property
    def is_set(self) -> bool:
        return self.image_size is not None or self.patch_stride is not None


class FinetuneConfig(ConfigModel):
    """The defaults are the demo: `tiny-refined` for 300 steps of 4 samples at a peak learning rate of 1e-2 on the
    synthetic fundus data, fp32 on the CPU; preset, length and learning rate were chosen by validation Dice only
    (benchmarks/results/finetune_loss_experiment.md, benchmarks/results/demo_profile.md)."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        "preset:tiny-refined",
        description="`preset:<name>` (random init), an s3:// Hugging Face model folder artifact, or official:<folder>",
    )
    model_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="top-level Sa2VAConfig fields to replace (mask_loss, loss weights, freezing, LoRA, …)",
    )
    sam2: Sam2Geometry = Field(default_factory=Sam2Geometry, description="presets only: SAM2's input geometry")

    steps: int = Field(300, ge=1, description="optimizer steps")
    micro_batch_size: int = Field(4, ge=1, description="samples per rank per forward pass")
    global_batch_size: int = Field(4, ge=1, description="samples per optimizer step, over all ranks")
    lr: float = Field(1e-2, gt=0, le=1, description="peak learning rate (after warm-up, before the cosine decay)")
    weight_decay: float = Field(0.0, ge=0, le=1)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0, le=1)
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of the steps with linear warm-up")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine decay ends at lr × min_lr_ratio")
    gradient_clipping: float = Field(1.0, ge=0, description="max global gradient norm; 0 disables")
    zero_stage: Literal[2, 3] = 2
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 on GPUs, fp32 on the CPU")
    fused_adam: bool | None = Field(
        None,
        description="torch's AdamW as one fused kernel (true) or per-operation multi-tensor kernels (false); "
        "null: fused on GPUs, multi-tensor on the CPU",
    )
    autocast: Literal["off", "bf16"] = Field(
        "off",
        description="CPU only: the forward under torch.autocast(bfloat16) with fp32 weights, gradients and optimizer "
        "state; a CPU with AMX (Intel Sapphire Rapids and later) runs convolutions and matmuls several times faster "
        "in bf16 (benchmarks/results/demo_profile.md); without AMX or AVX512-BF16 it is slower",
    )
    activation_checkpointing: bool = False
    torch_compile: Literal["off", "encoders", "encoders_and_llm"] = Field(
        "off",
        description="encoders: torch.compile the frozen image encoders (InternViT, SAM2's Hiera); encoders_and_llm: "
        "each LLM decoder layer too, LoRA inside; a minute or two of compilation per launch; GPUs and ZeRO-2 only",
    )
    fused_encoder_gelu: bool | None = Field(
        None,
        description="compute GELU inside the first matmul of the frozen image encoders' MLPs (cuBLASLt's epilogue: "
        "the tanh form of GELU, at most 4.7e-4 from the exact GELU they were trained with) instead of as a pass of "
        "its own; null: on GPUs",
    )
    seed: int = Field(0, ge=0)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    val_split: str = "val"
    val_every: int | None = Field(100, ge=1, description="validation Dice every N steps and at the end; None: never")
    final_model: Literal["last", "best"] = Field(
        "last", description="`best`: the final artifact holds the step with the highest validation Dice"
    )
    checkpoint_every: int = Field(
        100, ge=1, description="publish a resumable checkpoint every N steps (and at the end)"
    )
    keep_checkpoints: int = Field(
        2, ge=1, description="step checkpoints kept in the store (the best one is always kept)"
    )
    resume: str = Field(
        "auto", description="`auto` (newest complete checkpoint of this run), `never`, or a step artifact URI"
    )

    log_every: int = Field(10, ge=1, description="console progress line every N steps (the JSONL has every step)")
    num_workers: int = Field(
        1, ge=0, description="DataLoader worker processes per rank: 1 loads and augments the next batch during a step"
    )
    cpu_processes: int = Field(1, ge=1, description="ranks on a machine without GPUs")
    gpus: int | None = Field(None, ge=1, description="ranks on a GPU machine; None: every visible GPU")

    @field_validator("model_overrides")
    @classmethod
    def _finite_overrides(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        """Sa2VAConfig is not a pydantic model: its numbers are checked here, where a run can set them."""
        for name, value in overrides.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"model_overrides.{name} must be a finite number, not {value}")
            if name.endswith("_loss_weight") and isinstance(value, int | float) and value < 0:
                raise ValueError(f"model_overrides.{name} must be >= 0, not {value}")
        return overrides

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not a multiple of "
                f"micro_batch_size {self.micro_batch_size}"
            )
        if self.torch_compile != "off" and self.zero_stage == 3:
            raise ValueError(
                f"torch_compile {self.torch_compile!r} is not supported with zero_stage 3: ZeRO-3 gathers each "
                "module's parameters in hooks that compiled modules do not run the same way; use zero_stage 2"
            )
        if self.final_model == "best" and self.val_every is None:
            raise ValueError("final_model 'best' needs validation: set val_every")
        if self.resume not in ("auto", "never") and not self.resume.startswith("s3://"):
            raise ValueError(f"resume must be 'auto', 'never' or an s3:// step artifact URI, not {self.resume!r}")
        return self

    def gradient_accumulation(self, world_size: int) -> int:
        """Micro-batches per rank per step; raises unless the global batch splits evenly over the ranks."""
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise TrainingError(
                f"global_batch_size {self.global_batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size} × {world_size} ranks = {per_step}; change one of them"
            )
        return self.global_batch_size // per_step

    def resolve_precision(self, on_gpu: bool) -> Precision:
        if self.precision == "auto":
            return "bf16" if on_gpu else "fp32"
        if self.precision == "bf16" and not on_gpu:
            raise TrainingError("precision bf16 needs GPUs; on the CPU use fp32 (or auto)")
        return self.precision

    def key_fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(OPERATIONAL_FIELDS))
