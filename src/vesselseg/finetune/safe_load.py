"""DeepSpeed checkpoint files unpickled without running code from them.

DeepSpeed saves rank files with `torch.save` and reads them back with `torch.load(weights_only=False)`, which runs
whatever a crafted file's pickle asks for. Every read of a checkpoint here (conversion, parity, resume) is
`weights_only=True` with an allow-list of the DeepSpeed types its ZeRO-2/3 checkpoints really hold, found by reading
checkpoints DeepSpeed 0.19.8 wrote (CPU, gloo; fp32 and bf16; full and LoRA recipes; the finetune stage's own with its
scheduler); tests/integration/test_finetune_safe_load.py checks the list against fresh ones. A file that needs anything
else is refused, naming the file and the opt-in.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vesselseg.errors import VesselsegError

_torch_load = torch.load


class UnsafeCheckpointError(VesselsegError):
    """A checkpoint file holds Python objects outside the allow-list; it was not unpickled."""


def deepspeed_globals() -> list[Any]:
    """The non-tensor types of a DeepSpeed ZeRO-2/3 checkpoint (imported late: DeepSpeed is slow to import)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


def load(path: str | Path, opt_in: str, trust_pickle: bool = False, **kwargs: Any) -> Any:
    """`torch.load(path, **kwargs)` of a checkpoint file: tensors, plain containers and `deepspeed_globals` only,
    unless `trust_pickle`. `opt_in` says how an operator would allow the file, for the refusal's message."""
    if trust_pickle:
        return _torch_load(path, weights_only=False, **kwargs)
    with torch.serialization.safe_globals(deepspeed_globals()):
        try:
            return _torch_load(path, weights_only=True, **kwargs)
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpointError(
                f"{path}: refused to unpickle it: it holds Python objects that a DeepSpeed checkpoint does not "
                f"({_refused(path, err)}). {opt_in}"
            ) from err


def _refused(path: str | Path, err: pickle.UnpicklingError) -> str:
    """What the file holds beyond the allow-list, by name; else torch's own line that names it."""
    try:
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in deepspeed_globals()}
        unsafe = sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) - allowed)
    except Exception:  # a file torch cannot even list: its own message must do
        unsafe = []
    if unsafe:
        return ", ".join(unsafe)
    # torch wraps the one line that names the refused global in paragraphs of advice.
    parts = [part.strip() for part in str(err).split("\n\n") if part.strip()]
    return (parts[1:-1] or parts)[-1].split("WeightsUnpickler error: ")[-1].splitlines()[0]


def pickle_enums_by_value() -> None:
    """Makes DeepSpeed's ZeroStageEnum pickle as `ZeroStageEnum(value)`, which the weights-only loader accepts.

    Some Python 3.11 patch releases (Debian bookworm's 3.11.2, the images' Python) pickle an enum member as
    `getattr(ZeroStageEnum, name)`, others by value; `getattr` cannot join the allow-list, since it reaches any
    attribute of any allowed class. Every engine that may save a checkpoint calls this first (finetune/engine.py).
    """
    from deepspeed.runtime.zero.config import ZeroStageEnum

    ZeroStageEnum.__reduce_ex__ = lambda self, protocol: (type(self), (self.value,))  # type: ignore[method-assign]


@contextlib.contextmanager
def deepspeed_loads(opt_in: str, trust_pickle: bool = False) -> Iterator[None]:
    """Inside the block every `torch.load`, DeepSpeed's own included (they ask for weights_only=False), is `load`.

    DeepSpeed offers no switch for this: its checkpoint engine and zero_to_fp32 call `torch.load` directly. The
    patch is process-wide while the block runs, which is what covers every call DeepSpeed makes.
    """

    def patched(f: Any, map_location: Any = None, **kwargs: Any) -> Any:
        kwargs.pop("weights_only", None)
        return load(f, opt_in, trust_pickle, map_location=map_location, **kwargs)

    torch.load = patched
    try:
        yield
    finally:
        torch.load = _torch_load
