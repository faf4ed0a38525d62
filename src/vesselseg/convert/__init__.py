"""Checkpoint conversion: a DeepSpeed ZeRO checkpoint or an xtuner iter_N.pth → a verified Hugging Face folder.

    checkpoint = DeepSpeedInput(run_dir)          # model/ + checkpoint/ of a fine-tuning run
    saved = convert_checkpoint(checkpoint, out_dir, OutputConfig(dtype="bfloat16"))
    report = verify_parity(checkpoint, out_dir, dataset, ParityConfig(), "bfloat16")
    raise_unless_passed(report, out_dir)

Modules: zero (DeepSpeed's consolidation as a lazy tensor source), xtuner (iter_N.pth overlay), official_keys (official
Sa2VA names → ours), merge (plan on meta, LoRA merged in fp32 by peft, one cast), save (streamed safetensors shards),
parity (the proof), sample_checkpoint (real DeepSpeed checkpoints of a preset for tests and benchmarks).
"""

from vesselseg.convert.conversion import PARITY_FILE, convert_checkpoint, verify_parity
from vesselseg.convert.errors import ConversionError, ParityError
from vesselseg.convert.inputs import (
    CHECKPOINT_DIR,
    MODEL_DIR,
    CheckpointInput,
    DeepSpeedInput,
    XtunerInput,
)
from vesselseg.convert.parity import (
    TOLERANCES,
    ParityConfig,
    ParityReport,
    raise_unless_passed,
)
from vesselseg.convert.save import OutputConfig, SavedFolder
from vesselseg.convert.xtuner import OverlayReport

__all__ = [
    "CHECKPOINT_DIR",
    "MODEL_DIR",
    "PARITY_FILE",
    "TOLERANCES",
    "CheckpointInput",
    "ConversionError",
    "DeepSpeedInput",
    "OutputConfig",
    "OverlayReport",
    "ParityConfig",
    "ParityError",
    "ParityReport",
    "SavedFolder",
    "XtunerInput",
    "convert_checkpoint",
    "raise_unless_passed",
    "verify_parity",
]
