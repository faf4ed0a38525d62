"""What a conversion reads: a fine-tuning run's DeepSpeed checkpoint, or an xtuner `iter_N.pth` over a base model.

Both give the training-time model config, its merge plan (made once, for the conversion and the parity check), the
folder the processor (tokenizer) is read from, and `open()`: a fresh `TensorSource` checked against the plan before
anything is written. The parity check opens the input a second time, so its reference owes nothing to the
conversion's own reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from vesselseg.convert.errors import ConversionError
from vesselseg.convert.merge import MergePlan, check_source_matches, plan_merge
from vesselseg.convert.xtuner import OverlayReport, XtunerOverlay
from vesselseg.convert.zero import ZeroCheckpoint
from vesselseg.finetune.checkpoint import (  # the layout the finetune stage writes
    CHECKPOINT_DIR,
    MODEL_DIR,
)
from vesselseg.model import Sa2VAConfig


def read_config(folder: Path) -> Sa2VAConfig:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ConversionError(f"{path} does not exist: the model config is needed to rebuild the training-time module")
    config = Sa2VAConfig.from_pretrained(folder)
    if config.model_type != Sa2VAConfig.model_type:
        raise ConversionError(f"{path} is a {config.model_type!r} config, not {Sa2VAConfig.model_type!r}")
    return config


class _Planned:
    config: Sa2VAConfig

    @cached_property
    def plan(self) -> MergePlan:
        return plan_merge(self.config)


@dataclass
class DeepSpeedInput(_Planned):
    """A fine-tuning run folder: `model/` (config, tokenizer) and `checkpoint/` (DeepSpeed save_checkpoint output)."""

    run_dir: Path
    tag: str | None = None
    trust_pickle: bool = False
    config: Sa2VAConfig = field(init=False)
    facts: dict[str, Any] = field(init=False, default_factory=dict)  # what open() found: tag, ZeRO stage, ranks

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.config = read_config(self.processor_dir)

    @property
    def processor_dir(self) -> Path:
        return self.run_dir / MODEL_DIR

    def open(self) -> ZeroCheckpoint:
        source = ZeroCheckpoint(self.run_dir / CHECKPOINT_DIR, self.tag, self.trust_pickle)
        check_source_matches(self.plan, source, str(self.processor_dir / "config.json"))
        self.facts = {
            "kind": "deepspeed",
            "tag": source.tag,
            "zero_stage": source.zero_stage,
            "world_size": source.world_size,
        }
        return source


@dataclass
class XtunerInput(_Planned):
    """An xtuner `iter_N.pth` and the Hugging Face `Sa2VAModel` folder it trained from (config, tokenizer, weights)."""

    checkpoint: Path
    base_dir: Path
    allow_missing: bool = False
    trust_pickle: bool = False
    config: Sa2VAConfig = field(init=False)
    report: OverlayReport | None = field(init=False, default=None)
    facts: dict[str, Any] = field(init=False, default_factory=dict)  # what open() found: key counts

    def __post_init__(self) -> None:
        self.checkpoint, self.base_dir = Path(self.checkpoint), Path(self.base_dir)
        self.config = read_config(self.base_dir)

    @property
    def processor_dir(self) -> Path:
        return self.base_dir

    def open(self) -> XtunerOverlay:
        source = XtunerOverlay(self.plan, self.checkpoint, self.base_dir, self.allow_missing, self.trust_pickle)
        self.report = source.report
        self.facts = {
            "kind": "xtuner",
            "applied": len(self.report.applied),
            "missing": len(self.report.missing),
            "unexpected": len(self.report.unexpected),
        }
        return source


CheckpointInput = DeepSpeedInput | XtunerInput
