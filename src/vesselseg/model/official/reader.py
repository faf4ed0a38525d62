"""Reads an official checkpoint's tensors: safetensors or `pytorch_model*.bin`, one file or sharded with an index.

Only data files are opened: `.bin` shards go through `torch.load(weights_only=True, mmap=True)`, which unpickles
tensors and plain containers and nothing else, and no Python file of the folder is ever imported. Shapes and
dtypes are known before any tensor is read, so a mapping can be checked completely first.
"""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from vesselseg.model.official.errors import OfficialImportError
from vesselseg.storage.paths import inside

# (single file, index) per format, safetensors preferred as transformers does.
FORMATS = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)

# The safetensors dtype names this project reads and writes.
SAFETENSORS_DTYPES = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    file: str
    shape: tuple[int, ...]
    dtype: torch.dtype


def _weight_files(folder: Path) -> list[Path]:
    for single, index in FORMATS:
        if (folder / index).is_file():
            try:
                weight_map = json.loads((folder / index).read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as err:
                raise OfficialImportError(f"{folder / index}: not a weight index ({err})") from err
            files = [
                inside(folder, name, str(folder / index), OfficialImportError)
                for name in sorted(set(weight_map.values()))
            ]
            absent = [f.name for f in files if not f.is_file()]
            if absent:
                raise OfficialImportError(f"{folder / index} lists shards that are not in the folder: {absent}")
            return files
        if (folder / single).is_file():
            return [folder / single]
    names = ", ".join(name for pair in FORMATS for name in pair)
    raise OfficialImportError(f"{folder}: no weights found (looked for {names})")


class CheckpointReader:
    """The tensors of a folder by name; `info` needs no tensor data, `tensor` reads one."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.files = _weight_files(self.folder)
        self.info: dict[str, TensorInfo] = {}
        self._bin: dict[str, dict[str, torch.Tensor]] = {}
        for path in self.files:
            for key, info in self._scan(path).items():
                if key in self.info:
                    raise OfficialImportError(f"tensor {key!r} is in both {self.info[key].file} and {path.name}")
                self.info[key] = info

    def _scan(self, path: Path) -> dict[str, TensorInfo]:
        if path.suffix == ".safetensors":
            with safe_open(path, framework="pt") as handle:
                return {
                    key: TensorInfo(path.name, tuple(handle.get_slice(key).get_shape()), self._dtype(handle, key, path))
                    for key in handle.keys()  # noqa: SIM118 (safe_open is not iterable)
                }
        try:
            tensors = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # torch raises several types for files that are not plain tensor pickles
            raise OfficialImportError(f"{path}: not a plain tensor checkpoint ({type(err).__name__}: {err})") from err
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise OfficialImportError(f"{path}: expected a flat dict of tensors")
        self._bin[path.name] = tensors
        return {key: TensorInfo(path.name, tuple(t.shape), t.dtype) for key, t in tensors.items()}

    @staticmethod
    def _dtype(handle, key: str, path: Path) -> torch.dtype:
        name = handle.get_slice(key).get_dtype()
        if name not in SAFETENSORS_DTYPES:
            raise OfficialImportError(f"{path.name}: tensor {key!r} has dtype {name}, which the import does not read")
        return SAFETENSORS_DTYPES[name]

    def keys(self) -> list[str]:
        return list(self.info)

    def tensor(self, key: str) -> torch.Tensor:
        return next(self.tensors([key]))[1]

    def tensors(self, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """The named tensors, file by file so that each shard is opened once."""
        by_file: dict[str, list[str]] = {}
        for key in keys:
            by_file.setdefault(self.info[key].file, []).append(key)
        for name, names in by_file.items():
            if name in self._bin:
                yield from ((key, self._bin[name][key]) for key in names)
                continue
            with safe_open(self.folder / name, framework="pt") as handle:
                yield from ((key, handle.get_tensor(key)) for key in names)
