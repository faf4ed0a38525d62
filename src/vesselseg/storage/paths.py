"""Paths that come from files or object keys: relative, plain segments only, and inside their folder.

A manifest entry, an object key under a raw prefix, a weight-index entry or a dataset index row is data someone else
wrote; joined onto a local folder unchecked, `/etc/x` or `../x` would read or write outside it.
"""

from __future__ import annotations

from pathlib import Path

from vesselseg.errors import StorageError, VesselsegError


def path_problem(path: str) -> str | None:
    """Why `path` is not a safe relative POSIX path (None if it is): absolute, an empty, `.` or `..` segment, a NUL."""
    if not path:
        return "it is empty"
    if "\0" in path:
        return "it contains a NUL character"
    if path.startswith("/"):
        return "it is absolute"
    for segment in path.split("/"):
        if not segment:
            return "it has an empty segment"
        if segment in {".", ".."}:
            return f"it has a {segment!r} segment"
    return None


def check_relative(path: str, what: str, error: type[VesselsegError] = StorageError) -> str:
    """`path` unchanged, or `error` naming `what` (the file or key it came from) and the reason."""
    if problem := path_problem(path):
        raise error(f"{what}: path {path!r} refused: {problem} (only relative paths inside the folder are allowed)")
    return path


def check_inside(root: Path, target: Path, what: str, error: type[VesselsegError] = StorageError) -> Path:
    """`target` unchanged once it resolves (symbolic links followed) inside `root`, else `error` naming `what`."""
    if not Path(target).resolve().is_relative_to(Path(root).resolve()):
        raise error(f"{what}: {target} resolves to {Path(target).resolve()}, outside {root}")
    return target


def inside(root: Path, path: str, what: str, error: type[VesselsegError] = StorageError) -> Path:
    """`root / path` once `path` is a safe relative path that also resolves inside `root`."""
    return check_inside(root, Path(root) / check_relative(path, what, error), what, error)
