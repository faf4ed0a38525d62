"""Writing the Hugging Face folder one tensor at a time.

The folder is what `Sa2VAModel.save_pretrained(max_shard_size=...)` plus `Sa2VAProcessor.save_pretrained` write —
safetensors shards named and split by `huggingface_hub.split_torch_state_dict_into_shards` as transformers does,
`model.safetensors.index.json`, `config.json`, `generation_config.json`, the tokenizer — but the plain model is never
built. The shard plan is made from meta tensors; each shard's safetensors header is known before any weight is read
(names, dtypes, shapes), so the file is written as the format lays it out (8-byte header length, JSON header, the
tensors' bytes back to back). Worker threads gather and merge the next tensors while each one is cast straight into
the chunk buffers of a `ChunkedFile`, whose thread hands them to the disk (see direct_write). Memory holds a few
tensors (workers + 1) and a few chunks; reading, casting and writing overlap, and so does writing the config and
tokenizer. `safetensors.save_file` would need the whole shard in memory and holds the GIL while it writes. Tied
weights are saved once, under the name transformers keeps, because safetensors refuses aliased tensors and
`from_pretrained` ties them again.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import struct
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from pydantic import ConfigDict, Field
from tqdm.auto import tqdm
from transformers import GenerationConfig

from vesselseg.config import ConfigModel
from vesselseg.convert.direct_write import ChunkedFile, ChunkPool
from vesselseg.convert.errors import ConversionError
from vesselseg.convert.merge import MergePlan, PlainTensor, PlainTensorReader
from vesselseg.convert.source import TensorSource
from vesselseg.model import Sa2VAProcessor
from vesselseg.model.official.reader import SAFETENSORS_DTYPES

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
SAFE_WEIGHTS = "model{suffix}.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
_SAFETENSORS_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
# 16 MiB chunks, 4 of them: the disk always has the next chunk queued while one is filled (measured on a 2-core VM;
# 8 to 32 MiB were within noise).
_CHUNK_BYTES = 16 * 2**20
_CHUNKS = 4


class OutputConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    dtype: Literal["bfloat16", "float32"] = Field("bfloat16", description="every floating tensor is cast to it, once")
    max_shard_size: Annotated[int, Field(ge=1)] | str = Field(
        "1GB", description="per safetensors file, as in save_pretrained (a tensor larger than this gets its own shard)"
    )
    workers: int | None = Field(
        None, ge=1, description="threads gathering, merging and casting ahead of the writer; default min(4, cores)"
    )


@dataclass
class SavedFolder:
    path: Path
    files: list[str]
    shards: list[str]
    weight_bytes: int
    num_parameters: int
    dtype: str
    untied: list[str]
    write_s: float


def write_hf_folder(
    plan: MergePlan,
    source: TensorSource,
    processor_dir: Path,
    out_dir: Path,
    output: OutputConfig,
) -> SavedFolder:
    """Writes the plain model of `plan` from `source` into `out_dir` (new or empty), with the processor of
    `processor_dir` (a folder `Sa2VAProcessor.from_pretrained` reads)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConversionError(f"output folder {out_dir} is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = DTYPES[output.dtype]
    started = time.perf_counter()

    by_key = {t.key: t for t in plan.tensors}
    meta = {
        t.key: torch.empty(t.shape, dtype=dtype if t.dtype.is_floating_point else t.dtype, device="meta")
        for t in plan.tensors
    }
    split = split_torch_state_dict_into_shards(
        meta, filename_pattern=SAFE_WEIGHTS, max_shard_size=output.max_shard_size
    )
    shards = list(split.filename_to_tensors.items())
    last_use = {}
    for index, (_, keys) in enumerate(shards):
        for key in plan.source_keys([by_key[k] for k in keys]):
            last_use[key] = index

    reader = PlainTensorReader(plan, source)
    order = [by_key[k] for _, keys in shards for k in keys]
    tensors = _prefetched(reader, order, output.workers or min(4, os.cpu_count() or 1))
    total = sum(t.numel() * t.element_size() for t in meta.values())
    written = 0
    pool = ChunkPool(_CHUNK_BYTES, _CHUNKS)
    try:
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="convert-metadata") as side,
            tqdm(total=total, unit="B", unit_scale=True, desc="writing shards", mininterval=2.0) as progress,
        ):
            # Config and tokenizer are small but slow Python (about 0.3 s): written while the shards stream.
            metadata = side.submit(_write_metadata, plan, processor_dir, out_dir, output.dtype)
            for index, (filename, keys) in enumerate(shards):
                header = _header([(k, meta[k]) for k in keys])
                with ChunkedFile(out_dir / filename, pool) as shard:
                    shard.put_bytes(header)
                    for key in keys:
                        value = next(tensors)
                        shard.put(value, meta[key].dtype)  # the one explicit cast of floating tensors
                        del value
                        nbytes = meta[key].numel() * meta[key].element_size()
                        written += nbytes
                        progress.update(nbytes)
                expected = len(header) + sum(m.numel() * m.element_size() for m in (meta[k] for k in keys))
                if shard.size != expected or (out_dir / filename).stat().st_size != expected:
                    raise ConversionError(
                        f"{out_dir / filename} has {(out_dir / filename).stat().st_size} bytes, expected {expected}"
                    )
                source.release([k for k, last in last_use.items() if last == index])
                log.info("wrote %s (%d/%d shards, %.2f GB so far)", filename, index + 1, len(shards), written / 1e9)
            metadata.result()
    finally:
        pool.close()
    if split.is_sharded:
        index = {
            "metadata": {"total_parameters": plan.num_parameters, **split.metadata},
            "weight_map": split.tensor_to_filename,
        }
        (out_dir / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return SavedFolder(
        path=out_dir,
        files=sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()),
        shards=[name for name, _ in shards],
        weight_bytes=written,
        num_parameters=plan.num_parameters,
        dtype=output.dtype,
        untied=plan.untied,
        write_s=time.perf_counter() - started,
    )


def _header(entries: list[tuple[str, torch.Tensor]]) -> bytes:
    """The safetensors header for tensors laid out back to back in this order; padded so the data starts 8-aligned."""
    if sys.byteorder != "little":
        raise ConversionError("safetensors files are little-endian; this machine is not")
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, tensor in entries:
        size = math.prod(tensor.shape) * tensor.element_size()
        header[name] = {
            "dtype": _SAFETENSORS_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-(8 + len(blob)) % 8)
    return struct.pack("<Q", len(blob)) + blob


def _prefetched(reader: PlainTensorReader, order: list[PlainTensor], workers: int) -> Iterator[torch.Tensor]:
    """Each tensor of `order`, contiguous and in order, produced by `workers` threads running ahead of the writer
    (torch's gathering releases the GIL, so they overlap with each other and with the casts and file writes)."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convert-read") as pool:
        pending: deque = deque()
        for tensor in order:
            pending.append(pool.submit(lambda t: reader.read(t).contiguous(), tensor))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _write_metadata(plan: MergePlan, processor_dir: Path, out_dir: Path, dtype: str) -> None:
    """config.json, generation_config.json and the processor (tokenizer) files."""
    config = copy.deepcopy(plan.config)
    config.architectures = ["Sa2VAModel"]
    config.dtype = dtype
    config.save_pretrained(out_dir)
    processor = Sa2VAProcessor.from_pretrained(processor_dir)
    processor.save_pretrained(out_dir)
    generation = GenerationConfig.from_model_config(config.text_config)
    generation.update(
        eos_token_id=processor.tokenizer.eos_token_id, pad_token_id=processor.tokenizer.pad_token_id, do_sample=False
    )
    generation.save_pretrained(out_dir)
