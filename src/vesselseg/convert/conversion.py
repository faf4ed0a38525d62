"""The conversion recipe: plan on meta (once per input), stream the shards, then prove parity against the checkpoint.

checkpoint = DeepSpeedInput(run_dir)          # or XtunerInput(iter_N.pth, base_dir)
saved = convert_checkpoint(checkpoint, out_dir, OutputConfig(dtype="bfloat16", max_shard_size="1GB"))
report = verify_parity(checkpoint, out_dir, dataset, ParityConfig(), "bfloat16")  # writes parity.json
raise_unless_passed(report, out_dir)
"""

from __future__ import annotations

import logging
from pathlib import Path

from vesselseg.convert.inputs import CheckpointInput
from vesselseg.convert.merge import training_module
from vesselseg.convert.parity import ParityConfig, ParityReport, check_parity, probe_batch
from vesselseg.convert.save import OutputConfig, SavedFolder, write_hf_folder
from vesselseg.data import PreparedDataset
from vesselseg.model import Sa2VAProcessor

log = logging.getLogger(__name__)

PARITY_FILE = "parity.json"


def convert_checkpoint(checkpoint: CheckpointInput, out_dir: Path, output: OutputConfig) -> SavedFolder:
    """Writes the plain Hugging Face folder of `checkpoint` into `out_dir`; bad input fails before any shard."""
    saved = write_hf_folder(checkpoint.plan, checkpoint.open(), checkpoint.processor_dir, out_dir, output)
    log.info(
        "wrote %d shards, %.3f GB of %s weights in %.1f s",
        len(saved.shards),
        saved.weight_bytes / 1e9,
        saved.dtype,
        saved.write_s,
    )
    return saved


def verify_parity(
    checkpoint: CheckpointInput, out_dir: Path, dataset: PreparedDataset, config: ParityConfig, dtype: str
) -> ParityReport:
    """Compares `out_dir` with the training-time module rebuilt from a second reading of `checkpoint`."""
    batch, ids = probe_batch(dataset, Sa2VAProcessor.from_pretrained(out_dir), config)
    report = check_parity(
        lambda: training_module(checkpoint.config, checkpoint.open()), out_dir, batch, ids, dtype, config
    )
    (Path(out_dir) / PARITY_FILE).write_text(report.model_dump_json(indent=2))
    return report
