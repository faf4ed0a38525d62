"""The parity check: the converted folder, loaded fresh, must reproduce the module that trained.

The reference is the training-time module rebuilt from the checkpoint itself (`apply_training_recipe(Sa2VAModel)`,
LoRA unmerged, float32, every tensor from the checkpoint). The candidate is `Sa2VAModel.from_pretrained` of the
written folder. Both run one teacher-forced forward pass ("It is [SEG].") on a fixed probe batch: the first
`num_images` images (sorted ids) of the dataset's validation split. Compared per output:

  - `lm_logits`: the LLM's logits at the supervised answer positions,
  - `mask_logits`: SAM2's low-resolution mask logits for each `[SEG]`,

as max absolute error and relative error = max |candidate − reference| / max |reference|.

Both sides compute in float32 (the candidate's weights are upcast after loading), so the check measures the
conversion — which tensors went where, the LoRA merge, the rounding to the output dtype — not kernel arithmetic,
which belongs to the inference stage. An output passes if its relative error is at most

    max(TOLERANCES[dtype], ROUNDING_FACTOR × rounding floor)

  - float32 output: 1e-4. Only the order of floating-point operations changes (x·(W + BA) instead of x·W + x·B·A);
    measured about 3e-7 on the tiny preset.
  - bfloat16 output: 1e-2, or 3× the rounding floor if that is larger. The floor is the error the reference itself
    shows when every one of its weights is rounded to bfloat16 (and back): what rounding alone does to this model
    on this batch. Rounding perturbs each weight by up to 2^-9 relative, which gives errors of about 1e-3 to 5e-3 on
    the tiny preset, more where outputs are small next to the activations they come from (random weights); a
    missing LoRA merge, a stale or misplaced tensor moves outputs far beyond it (0.15 for an unmerged tiny LoRA).
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from vesselseg.config import ConfigModel
from vesselseg.convert.errors import ParityError
from vesselseg.convert.save import DTYPES
from vesselseg.data import PreparedDataset
from vesselseg.model import Sa2VABatch, Sa2VAModel, Sa2VAProcessor, prompts

log = logging.getLogger(__name__)

TOLERANCES = {"float32": 1e-4, "bfloat16": 1e-2}
ROUNDING_FACTOR = 3.0
OUTPUTS = ("lm_logits", "mask_logits")


class ParityConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    split: str = Field("val", description="probe images come from this split of the dataset artifact")
    num_images: int = Field(2, ge=1)
    expression: str = Field("blood vessels", min_length=1, description="the referring expression of the probe prompt")
    device: str = Field("cpu", description="where both forward passes run")
    tolerance: float | None = Field(
        None, gt=0, description="fixed relative-error bound replacing the default (TOLERANCES, rounding floor)"
    )


class OutputParity(BaseModel):
    shape: list[int]
    max_abs_error: float
    max_rel_error: float
    reference_max_abs: float
    rounding_floor: float  # relative error of the reference with its weights rounded to the output dtype
    tolerance: float
    passed: bool


class ParityReport(BaseModel):
    dtype: str
    tolerance: float  # the fixed part of each output's bound
    split: str
    probe_ids: list[str]
    outputs: dict[str, OutputParity]
    passed: bool


def probe_batch(
    dataset: PreparedDataset, processor: Sa2VAProcessor, config: ParityConfig
) -> tuple[Sa2VABatch, list[str]]:
    ids = dataset.ids(config.split)[: config.num_images]
    if not ids:
        raise ParityError(f"dataset {dataset.root} has no {config.split!r} images to probe; set parity.split")
    images = [dataset.image(i) for i in ids]
    batch = processor(
        images,
        [prompts.segmentation_prompt(config.expression)] * len(ids),
        answers=[prompts.FORCED_ANSWER] * len(ids),
    )
    return batch, ids


@torch.no_grad()
def probe_outputs(model: Sa2VAModel, batch: Sa2VABatch, device: str) -> dict[str, torch.Tensor]:
    """The compared outputs of one teacher-forced forward pass, in float32 on the CPU."""
    model.to(device).eval()
    result = model(**{**batch.to(device, torch.float32), "gt_masks": None})
    return {name: getattr(result, name).float().cpu() for name in OUTPUTS}


def check_parity(
    build_reference: Callable[[], Sa2VAModel],
    converted_dir: Path,
    batch: Sa2VABatch,
    probe_ids: list[str],
    dtype: str,
    config: ParityConfig,
) -> ParityReport:
    """Runs the reference, frees it, loads `converted_dir` fresh and compares; the report says whether it passed."""
    reference = build_reference()
    expected = probe_outputs(reference, batch, config.device)
    rounded = expected
    if dtype != "float32":
        with torch.no_grad():
            # What a checkpoint holds (parameters, persistent buffers); recomputed buffers stay as loading makes them.
            for tensor in reference.state_dict(keep_vars=True).values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.to(DTYPES[dtype]))
        rounded = probe_outputs(reference, batch, config.device)
    del reference
    gc.collect()
    candidate = Sa2VAModel.from_pretrained(converted_dir, dtype=torch.float32)
    got = probe_outputs(candidate, batch, config.device)
    del candidate
    gc.collect()

    base = config.tolerance or TOLERANCES[dtype]
    outputs = {}
    for name in OUTPUTS:
        if got[name].shape != expected[name].shape:
            raise ParityError(
                f"{converted_dir}: {name} has shape {list(got[name].shape)}, the training-time module gives "
                f"{list(expected[name].shape)}"
            )
        error, relative = _errors(got[name], expected[name])
        floor = _errors(rounded[name], expected[name])[1]
        tolerance = base if config.tolerance else max(base, ROUNDING_FACTOR * floor)
        outputs[name] = OutputParity(
            shape=list(expected[name].shape),
            max_abs_error=error,
            max_rel_error=relative,
            reference_max_abs=expected[name].abs().max().item(),
            rounding_floor=floor,
            tolerance=tolerance,
            passed=math.isfinite(relative) and relative <= tolerance,
        )
        log.info(
            "parity %s: max abs %.3g, rel %.3g (rounding floor %.3g, tolerance %.3g)",
            name,
            error,
            relative,
            floor,
            tolerance,
        )
    return ParityReport(
        dtype=dtype,
        tolerance=base,
        split=config.split,
        probe_ids=probe_ids,
        outputs=outputs,
        passed=all(o.passed for o in outputs.values()),
    )


def _errors(got: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """Max absolute error, and that over the reference's largest magnitude."""
    error = (got - expected).abs().max().item()
    scale = expected.abs().max().item()
    return error, error / scale if scale > 0 else (0.0 if error == 0 else math.inf)


def raise_unless_passed(report: ParityReport, converted_dir: Path) -> None:
    if not report.passed:
        failing = "; ".join(
            f"{name}: rel {o.max_rel_error:.3g} > {o.tolerance:.3g} (max abs {o.max_abs_error:.3g})"
            for name, o in report.outputs.items()
            if not o.passed
        )
        raise ParityError(
            f"{converted_dir} does not reproduce the training-time model ({report.dtype} output): {failing}"
        )
