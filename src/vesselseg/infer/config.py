"""`InferConfig`: how the inference stage runs the model — strategy, backend, mode, batch and memory arithmetic."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from vesselseg.config import ConfigModel

Strategy = Literal["auto", "replicas", "sharded", "pipelined", "cpu"]
Backend = Literal["native", "remote_code"]
Layout = Literal["balanced", "accelerate"]
Mode = Literal["auto", "forced", "generate"]
DType = Literal["auto", "bfloat16", "float16", "float32"]

GIB = 1 << 30


class MemoryConfig(ConfigModel):
    """What the strategy chooser subtracts from each GPU's free memory before placing weights."""

    model_config = ConfigDict(extra="forbid")

    reserve_gib: float = Field(2.0, ge=0, description="per GPU: CUDA context, allocator slack, kernel workspaces")
    activation_gib_per_image: float = Field(
        0.5, ge=0, description="per GPU, per image of the micro-batch it computes; SAM2 at 1024 px dominates"
    )
    first_device_reserve_gib: float = Field(
        2.0,
        ge=0,
        description="extra room on the first GPU of each model copy, which holds the inputs, SAM2 features, the "
        "upsampled logits and the KV cache: it lightens GPU 0",
    )
    max_memory_gib: float | None = Field(
        None, gt=0, description="cap per GPU, e.g. 40 to plan as on 40 GB cards; None uses what is free"
    )


class InferConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = Field(
        "auto",
        description="auto: chosen from the model's size and the GPUs' free memory (logged with its reason); "
        "replicas: a full copy per GPU; sharded: one copy across GPUs; pipelined: the sharded layout fed with "
        "micro-batches so several GPUs work at once (with replicas × shards mixes); cpu: no GPU",
    )
    backend: Backend = Field("native", description="native: vesselseg's Sa2VAModel; remote_code: an official folder")
    trust_remote_code: bool = Field(
        False, description="must be true for backend remote_code, which executes Python code shipped in the folder"
    )
    mode: Mode = Field(
        "auto",
        description="auto: the model config's answer_mode (forced for models fine-tuned here, generate for official "
        "checkpoints); forced: the fixed answer 'It is [SEG].' teacher-forced; generate: greedy answer",
    )
    expression: str | None = Field(
        None,
        description="the prompt, for both backends: '<image>\\nPlease segment <expression> in this image.'; None: the "
        "dataset's own text",
    )
    batch_size: int = Field(4, ge=1, description="images per forward pass (one micro-batch)")
    max_new_tokens: int = Field(2048, ge=1, description="generate mode: the longest answer (official: 2048)")
    dtype: DType = Field("auto", description="auto: bfloat16 on GPU, float32 on the CPU")
    gpus: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, description="GPU indices to use; None: every visible GPU"
    )
    replicas: int | None = Field(None, ge=1, description="model copies (processes); on the CPU, worker processes")
    shards: int | None = Field(None, ge=1, description="GPUs per copy for sharded/pipelined; None: chosen")
    in_flight: int | None = Field(
        None,
        ge=1,
        description="micro-batches in flight per copy; None: 1 on the CPU and for sharded, 3 for a "
        "one-GPU copy (overlaps preprocessing), shards + 1 for pipelined",
    )
    layout: Layout = Field(
        "balanced",
        description="balanced: decoder layers split so every GPU of a copy has the same compute (what pipelining "
        "needs); accelerate: accelerate's balanced-memory infer_auto_device_map",
    )
    memory: MemoryConfig = Field(default_factory=MemoryConfig)

    @model_validator(mode="after")
    def _consistent(self) -> InferConfig:
        if self.backend == "remote_code" and self.strategy == "pipelined":
            raise ValueError("backend remote_code runs an official model as it is: strategy pipelined is native only")
        if self.strategy == "cpu" and self.shards not in (None, 1):
            raise ValueError(f"strategy cpu runs whole copies: shards must be unset, not {self.shards}")
        return self
