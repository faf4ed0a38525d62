"""A DeepSpeed ZeRO-2 or ZeRO-3 checkpoint (any number of ranks) as a `TensorSource`.

Consolidation is DeepSpeed's own: `deepspeed.utils.zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint` in lazy
mode. Its rank files are memory-mapped; under ZeRO-3 each trained tensor is gathered from the ranks' fp32 partitions
only when it is read, and frozen tensors (kept in the model-state files) come back whole. Before handing anything to
DeepSpeed, the checkpoint is checked here so that a bad one fails with the file named: a missing `latest`, a missing
tag folder, a truncated rank file.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import sys
import zipfile
from pathlib import Path

import torch

from vesselseg.convert.errors import ConversionError
from vesselseg.finetune.safe_load import deepspeed_loads, load

# What a refusal tells the operator; the file itself is named by the loader.
OPT_IN = "Set trust_pickle=true for this conversion only if you trust the file"

log = logging.getLogger(__name__)

LATEST = "latest"
_MADV_DONTNEED = 4
_DROP_EVERY_BYTES = 64 * 2**20


def choose_tag(tag: str | None, latest: str | None, saved: list[str], where: str) -> str:
    """The tag to read: `tag` if given, else the one `latest` (the checkpoint's `latest` file, None if absent)
    names; it must be one of the `saved` tag folders. `where` names the checkpoint folder in errors."""
    where = where.rstrip("/")
    if tag is None:
        if latest is None:
            choices = sorted(saved) or "(none saved)"
            raise ConversionError(f"{where}/{LATEST} does not exist and no tag was given; pass tag= one of {choices}")
        tag = latest.strip()
        if not tag:
            raise ConversionError(f"{where}/{LATEST} is empty; pass tag= explicitly")
    if tag not in saved:
        raise ConversionError(f"checkpoint tag folder {where}/{tag} does not exist")
    return tag


def resolve_tag(checkpoint_dir: Path, tag: str | None) -> str:
    """`choose_tag` for a local checkpoint folder."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise ConversionError(f"checkpoint folder {checkpoint_dir} does not exist")
    latest = checkpoint_dir / LATEST
    saved = [p.name for p in checkpoint_dir.iterdir() if p.is_dir()]
    return choose_tag(tag, latest.read_text() if latest.is_file() else None, saved, str(checkpoint_dir))


def check_rank_files(tag_dir: Path) -> list[Path]:
    """Every rank file must be a complete torch zip archive; a truncated one has lost its central directory."""
    files = sorted(tag_dir.glob("*_model_states.pt")) + sorted(tag_dir.glob("*_optim_states.pt"))
    if not any(f.name.endswith("_optim_states.pt") for f in files):
        raise ConversionError(f"{tag_dir} holds no *_optim_states.pt rank files: not a DeepSpeed ZeRO checkpoint")
    if not any(f.name.endswith("_model_states.pt") for f in files):
        raise ConversionError(f"{tag_dir} holds no *_model_states.pt file: not a DeepSpeed ZeRO checkpoint")
    for path in files:
        try:
            with zipfile.ZipFile(path) as archive:
                size = path.stat().st_size
                if any(info.header_offset + info.compress_size > size for info in archive.infolist()):
                    raise zipfile.BadZipFile("a member runs past the end of the file")
        except zipfile.BadZipFile as err:
            raise ConversionError(
                f"rank file {path} is truncated or corrupt ({err}); re-copy or re-save the checkpoint"
            ) from err
    return files


class ZeroCheckpoint:
    """The consolidated training-time state dict of `checkpoint_dir/<tag>`, tensors gathered on demand."""

    def __init__(self, checkpoint_dir: Path, tag: str | None = None, trust_pickle: bool = False):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        self.checkpoint_dir = Path(checkpoint_dir)
        self.tag = resolve_tag(self.checkpoint_dir, tag)
        self.tag_dir = self.checkpoint_dir / self.tag
        self.files = check_rank_files(self.tag_dir)
        self.description = f"DeepSpeed checkpoint {self.tag_dir}"
        chatter = io.StringIO()
        try:
            # DeepSpeed prints its progress; keep it for the log instead of the terminal. Its rank-file reads are
            # weights-only with DeepSpeed's own types allowed, unless the operator trusts the pickle.
            with contextlib.redirect_stdout(chatter), deepspeed_loads(OPT_IN, trust_pickle):
                self._state = get_fp32_state_dict_from_zero_checkpoint(
                    str(self.checkpoint_dir), self.tag, lazy_mode=True
                )
        except (ValueError, RuntimeError, KeyError, OSError, EOFError) as err:
            raise ConversionError(f"DeepSpeed cannot consolidate {self.tag_dir}: {err}") from err
        log.info("%s", chatter.getvalue().strip().replace("\n", "; "))
        optim_files = [f for f in self.files if f.name.endswith("_optim_states.pt")]
        self.world_size = len(optim_files)
        # Memory-mapped, so only the small pickled structure is read, not the tensors.
        optim_state = load(optim_files[0], OPT_IN, trust_pickle, mmap=True)
        self.zero_stage = int(optim_state["optimizer_state_dict"]["zero_stage"])
        self._read_since_drop = 0

    def shapes(self) -> dict[str, torch.Size]:
        return {key: torch.Size(value.shape) for key, value in self._state.items()}

    def load(self, key: str) -> torch.Tensor:
        with torch.no_grad():
            value = self._state[key].contiguous().detach()  # gathered from the ranks into a fresh tensor
        self._read_since_drop += value.numel() * value.element_size()
        if self._read_since_drop > _DROP_EVERY_BYTES:
            self._drop_mapped_pages()
        return value

    def release(self, keys: list[str]) -> None:
        for key in keys:
            self._state.pop(key, None)
        self._drop_mapped_pages()

    def _drop_mapped_pages(self) -> None:
        """Drop the resident pages of the memory-mapped rank files from this process.

        What was read has been copied out, and these are clean file pages (never written), so the kernel would reclaim
        them under pressure anyway and a later read faults them back in from the page cache. Without this they count
        against the process until the end, and peak RSS grows to the whole checkpoint instead of one shard. The
        mappings are looked up afresh each time, so only live mappings of the rank files are ever touched.
        """
        self._read_since_drop = 0
        if sys.platform != "linux":
            return
        names = {str(path.resolve()) for path in self.files}
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() in names:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    libc.madvise(start, end - start, _MADV_DONTNEED)
