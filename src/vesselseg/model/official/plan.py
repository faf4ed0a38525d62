"""The whole import checked before a tensor is read: every native tensor's sources, shape and completeness.

Strict by default. The import stops, listing every offender, when
- a source tensor has no rule (and is not ignored by design),
- a source tensor maps to a name the native model does not have,
- a native tensor would be left unfilled,
- a re-laid-out tensor does not have the native shape (shapes come from running each transform on a `meta`
  tensor of the source's shape, so the check and the import share one code path),
- two sources claim one native tensor, or a concatenation lacks a part.
`allow_missing` names optional parts (`OPTIONAL_PARTS`) that may be absent and then keep transformers'
initialisation; anything else stays an error.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from vesselseg.model.official.errors import OfficialImportError
from vesselseg.model.official.keymap import KeyMap, Piece
from vesselseg.model.official.reader import TensorInfo

# Parts a checkpoint may lack, with why starting them from scratch is legitimate.
OPTIONAL_PARTS = {
    "text_hidden_fcs": "the [SEG] → SAM2 prompt MLP, which Sa2VA's recipe (and this project's) trains in full",
}

MAX_LISTED = 20


@dataclass(frozen=True)
class Assignment:
    """One native tensor: its sources in concatenation order (one unless `concat`) and its shape."""

    target: str
    sources: tuple[tuple[str, Piece], ...]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    assignments: dict[str, Assignment]  # native key → how it is made
    ignored: dict[str, str]  # source key → reason
    initialised: dict[str, str]  # native key → optional part left at its initialisation

    def source_uses(self) -> dict[str, int]:
        uses: dict[str, int] = {}
        for assignment in self.assignments.values():
            for source, _ in assignment.sources:
                uses[source] = uses.get(source, 0) + 1
        return uses


def _listing(title: str, items: list[str]) -> str:
    shown = "\n    ".join(items[:MAX_LISTED])
    more = f"\n    … and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"  {len(items)} {title}:\n    {shown}{more}"


def _piece_shape(piece: Piece, info: TensorInfo) -> tuple[int, ...]:
    return tuple(piece.take(torch.empty(info.shape, dtype=info.dtype, device="meta")).shape)


def optional_part(key: str) -> str | None:
    return next((part for part in OPTIONAL_PARTS if key.startswith(part + ".")), None)


def make_plan(
    keymap: KeyMap,
    info: dict[str, TensorInfo],
    native: dict[str, tuple[int, ...]],
    allow_missing: Iterable[str] = (),
    source_name: str = "checkpoint",
) -> Plan:
    allowed = set(allow_missing)
    unknown_parts = sorted(allowed - set(OPTIONAL_PARTS))
    if unknown_parts:
        documented = "; ".join(f"{name}: {why}" for name, why in OPTIONAL_PARTS.items())
        raise OfficialImportError(f"allow_missing {unknown_parts}: not optional parts (documented: {documented})")

    problems: dict[str, list[str]] = {
        "source tensors that no rule maps": [f"{key} {list(info[key].shape)}" for key in keymap.unmatched],
        "source tensors mapped to names the native model lacks": [],
        "shape mismatches": [],
        "native tensors claimed twice": [],
        "native tensors left unfilled": [],
    }
    by_target: dict[str, list[tuple[str, Piece, tuple[int, ...]]]] = {}
    for source, pieces in keymap.pieces.items():
        for piece in pieces:
            if piece.target not in native:
                problems["source tensors mapped to names the native model lacks"].append(f"{source} → {piece.target}")
                continue
            try:
                shape = _piece_shape(piece, info[source])
            except (ValueError, RuntimeError) as err:
                problems["shape mismatches"].append(
                    f"{source} {list(info[source].shape)} → {piece.target} ({piece.how}): {err}"
                )
                continue
            by_target.setdefault(piece.target, []).append((source, piece, shape))

    assignments: dict[str, Assignment] = {}
    for target, found in by_target.items():
        parts = sorted(found, key=lambda item: -1 if item[1].part is None else item[1].part)
        if len(parts) > 1 and [p.part for _, p, _ in parts] != list(range(len(parts))):
            claims = ", ".join(f"{source} ({piece.how})" for source, piece, _ in parts)
            problems["native tensors claimed twice"].append(f"{target} ← {claims}")
            continue
        shapes = [shape for _, _, shape in parts]
        shape = shapes[0] if len(shapes) == 1 else (sum(s[0] for s in shapes), *shapes[0][1:])
        if shape != native[target] or any(s[1:] != shapes[0][1:] for s in shapes):
            sources = ", ".join(f"{source} {list(info[source].shape)} ({piece.how})" for source, piece, _ in parts)
            problems["shape mismatches"].append(
                f"{sources} → {target}: gives {list(shape)}, the native model has {list(native[target])}"
            )
            continue
        assignments[target] = Assignment(target, tuple((source, piece) for source, piece, _ in parts), shape)

    initialised = {}
    claimed = set(by_target)
    for key, shape in native.items():
        if key in claimed:
            continue
        part = optional_part(key)
        if part in allowed:
            initialised[key] = part
        else:
            problems["native tensors left unfilled"].append(f"{key} {list(shape)}")

    found_problems = {title: items for title, items in problems.items() if items}
    if found_problems:
        listing = "\n".join(_listing(title, items) for title, items in found_problems.items())
        raise OfficialImportError(f"{source_name} does not map onto the native model:\n{listing}")
    return Plan(assignments, dict(keymap.ignored), initialised)
