"""`import_official`: an official Sa2VA Hugging Face folder → a native `save_pretrained` folder + mapping report.

    config.json      → family, native Sa2VAConfig
    tokenizer files  → PreTrainedTokenizerFast, declared ids kept → image and [SEG] token ids
    weight names     → key map → plan, checked against a meta-device native model (nothing read yet)
    weight tensors   → re-laid out → Sa2VAModel.from_pretrained(state_dict=…) → save_pretrained + processor
    mapping_report.json, written last: every source tensor → native tensor(s), dtype, shape

Nothing in the folder is executed: config and tokenizer files are read as data, weights as tensors.
"""

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from tqdm.auto import tqdm
from transformers import Sam2Config

from vesselseg.model import prompts
from vesselseg.model.modeling import Sa2VAModel
from vesselseg.model.official.catalog import OFFICIAL_CONFIGS
from vesselseg.model.official.config import (
    architecture_differences,
    check_supported,
    identify,
    read_official_config,
    sa2va_config,
    template_matches,
)
from vesselseg.model.official.errors import OfficialImportError
from vesselseg.model.official.families import detect_family
from vesselseg.model.official.keymap import map_keys
from vesselseg.model.official.plan import Plan, make_plan
from vesselseg.model.official.reader import CheckpointReader
from vesselseg.model.official.tokenizer import TokenizerReport, load_official_tokenizer
from vesselseg.model.processing import Sa2VAProcessor

log = logging.getLogger(__name__)

REPORT = "mapping_report.json"


class TargetRecord(BaseModel):
    key: str
    how: str  # rename | copy | qkv:<q|k|v> | wqkv:<q|k|v> | concat:<part>
    shape: list[int]


class TensorRecord(BaseModel):
    source: str
    dtype: str
    shape: list[int]
    targets: list[TargetRecord]


class IgnoredRecord(BaseModel):
    source: str
    dtype: str
    shape: list[int]
    reason: str


class InitialisedRecord(BaseModel):
    key: str
    shape: list[int]
    part: str


class ImportReport(BaseModel):
    """What the import did, tensor by tensor; saved as `mapping_report.json` beside the native model."""

    model_config = ConfigDict(extra="forbid")

    source: str
    output: str
    family: str
    release: str | None  # the official release whose architecture the folder has, None if none
    preset: str
    dtype: str  # of the saved native weights
    template: str | None
    template_matches: bool  # official chat turns are the `<|im_start|>` form the native processor writes
    files: list[str]
    source_tensors: int
    native_tensors: int
    parameters: int
    tensors: list[TensorRecord]  # every imported source tensor → its native targets
    ignored: list[IgnoredRecord]  # source tensors not imported by design
    initialised: list[InitialisedRecord]  # native tensors left at initialisation (allow_missing)
    tokenizer: TokenizerReport
    seconds: float


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _target_dtype(official: dict[str, Any], reader: CheckpointReader, dtype: str | None) -> torch.dtype:
    """`dtype`, else the official config's, else the dtype holding most of the source's values."""
    name = dtype or official.get("torch_dtype") or official.get("dtype")
    if name is None:
        counts: dict[torch.dtype, int] = {}
        for info in reader.info.values():
            counts[info.dtype] = counts.get(info.dtype, 0) + int(torch.Size(info.shape).numel())
        return max(counts, key=counts.get)
    resolved = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise OfficialImportError(f"dtype {name!r} is not a floating-point torch dtype")
    return resolved


def _check_preset(official: dict[str, Any], preset: str, source: str) -> None:
    if preset == "auto":
        return
    if preset not in OFFICIAL_CONFIGS:
        raise OfficialImportError(f"preset {preset!r}: choose auto or one of {', '.join(OFFICIAL_CONFIGS)}")
    differences = architecture_differences(official, preset)
    if differences:
        raise OfficialImportError(f"{source} is not {preset}: " + "; ".join(differences))


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def build_state(plan: Plan, reader: CheckpointReader, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The native state dict: every source read once, re-laid out, cast; no two native tensors share memory."""
    uses = plan.source_uses()
    sources = dict(tqdm(reader.tensors(uses), total=len(uses), desc="reading official tensors", unit="tensor"))
    state = {}
    for target, assignment in plan.assignments.items():
        parts = []
        for source, piece in assignment.sources:
            tensor = piece.take(sources[source])
            # A source feeding several targets is split or copied: each target gets its own storage, since
            # safetensors serialisation drops tensors that share memory with another.
            if uses[source] > 1 and _shares_storage(tensor, sources[source]):
                tensor = tensor.clone()
            parts.append(tensor)
        state[target] = (parts[0] if len(parts) == 1 else torch.cat(parts)).to(dtype).contiguous()
    return state


def _records(plan: Plan, reader: CheckpointReader) -> tuple[list[TensorRecord], list[IgnoredRecord]]:
    targets: dict[str, list[TargetRecord]] = {}
    for target, assignment in plan.assignments.items():
        for source, piece in assignment.sources:
            shape = assignment.shape
            if piece.part is not None:  # one block of a concatenation
                shape = piece.take(torch.empty(reader.info[source].shape, device="meta")).shape
            targets.setdefault(source, []).append(TargetRecord(key=target, how=piece.how, shape=list(shape)))
    tensors = [
        TensorRecord(
            source=key,
            dtype=_dtype_name(reader.info[key].dtype),
            shape=list(reader.info[key].shape),
            targets=targets[key],
        )
        for key in reader.info
        if key in targets
    ]
    ignored = [
        IgnoredRecord(
            source=key,
            dtype=_dtype_name(reader.info[key].dtype),
            shape=list(reader.info[key].shape),
            reason=reason,
        )
        for key, reason in plan.ignored.items()
    ]
    return tensors, ignored


def _prepare_output(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise OfficialImportError(f"output folder {out} is not empty; the import writes a fresh folder")
    out.mkdir(parents=True, exist_ok=True)


def run_import(
    src: str | Path,
    out: str | Path,
    preset: str = "auto",
    allow_missing: Iterable[str] = (),
    *,
    dtype: str | None = None,
    sam2_config: Sam2Config | None = None,
) -> tuple[ImportReport, Sa2VAModel, Sa2VAProcessor]:
    """`import_official`, also returning the imported model and processor (already in memory)."""
    started = time.perf_counter()
    folder, out = Path(src), Path(out)
    official = read_official_config(folder)
    family = detect_family(official, str(folder / "config.json"))
    check_supported(official)
    _check_preset(official, preset, str(folder))
    release = identify(official)
    log.info("%s: %s family, %s", folder, family.name, release or "an architecture no official release has")

    tokenizer, tokenizer_report = load_official_tokenizer(folder, family, official.get("template"))
    config = sa2va_config(
        official,
        image_token_id=tokenizer.convert_tokens_to_ids(prompts.IMG_CONTEXT),
        seg_token_id=tokenizer.convert_tokens_to_ids(prompts.SEG),
        sam2_config=sam2_config,
        prepend_bos=tokenizer_report.prepend_bos,
        stop_token_ids=tokenizer.convert_tokens_to_ids(tokenizer_report.stop_tokens),
    )
    if len(tokenizer) > config.text_config.vocab_size:
        raise OfficialImportError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but llm_config.vocab_size is "
            f"{config.text_config.vocab_size}"
        )

    reader = CheckpointReader(folder)
    with torch.device("meta"):
        native = {key: tuple(value.shape) for key, value in Sa2VAModel(config).state_dict().items()}
    plan = make_plan(map_keys(reader.keys(), family, config), reader.info, native, allow_missing, str(folder))
    target_dtype = _target_dtype(official, reader, dtype)
    config.dtype = target_dtype

    _prepare_output(out)
    state = build_state(plan, reader, target_dtype)
    model, loading = Sa2VAModel.from_pretrained(
        None, config=config, state_dict=state, dtype=target_dtype, output_loading_info=True
    )
    unplanned = set(loading["missing_keys"]) != set(plan.initialised)
    if unplanned or loading["unexpected_keys"] or loading["mismatched_keys"]:
        raise OfficialImportError(f"transformers loaded the mapped state differently than planned: {loading}")
    processor = Sa2VAProcessor(config, tokenizer)
    log.info("saving the native model to %s", out)
    model.save_pretrained(out)
    processor.save_pretrained(out)

    tensors, ignored = _records(plan, reader)
    report = ImportReport(
        source=str(folder),
        output=str(out),
        family=family.name,
        release=release,
        preset=preset,
        dtype=_dtype_name(target_dtype),
        template=official.get("template"),
        template_matches=template_matches(official),
        files=[path.name for path in reader.files],
        source_tensors=len(reader.info),
        native_tensors=len(native),
        parameters=sum(p.numel() for p in model.parameters()),
        tensors=tensors,
        ignored=ignored,
        initialised=[
            InitialisedRecord(key=key, shape=list(native[key]), part=part) for key, part in plan.initialised.items()
        ],
        tokenizer=tokenizer_report,
        seconds=round(time.perf_counter() - started, 3),
    )
    if not report.template_matches:
        log.warning("%s: chat template %r is not the <|im_start|> turn format prompts are written in", folder,
                    report.template)  # fmt: skip
    (out / REPORT).write_text(report.model_dump_json(indent=1))
    log.info(
        "imported %d tensors into %s (%d ignored by design, %d initialised) in %.0f s",
        len(tensors), out, len(ignored), len(report.initialised), report.seconds,
    )  # fmt: skip
    return report, model, processor


def import_official(
    src: str | Path,
    out: str | Path,
    preset: str = "auto",
    allow_missing: Iterable[str] = (),
    *,
    dtype: str | None = None,
    sam2_config: Sam2Config | None = None,
) -> ImportReport:
    """Imports the official Sa2VA folder `src` into the empty folder `out`; strict unless `allow_missing`.

    `preset`: `auto`, or a release name from `catalog.OFFICIAL_CONFIGS` that the folder must match.
    `allow_missing`: optional parts (`plan.OPTIONAL_PARTS`) the checkpoint may lack.
    `dtype`: of the saved weights; default the official config's `torch_dtype`.
    `sam2_config`: SAM2's shape, which config.json does not record; default Hiera-L, as every release has.
    """
    return run_import(src, out, preset, allow_missing, dtype=dtype, sam2_config=sam2_config)[0]
