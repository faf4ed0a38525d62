"""Bytes downloaded and wall time per task of one `vesselseg run-local`, from its log and its transfer log.

Run the pipeline with `VESSELSEG_TRANSFER_LOG=<file>` (every object-store download appends a JSON line there, see
`vesselseg.storage.transfers`) and `-v`, keeping its output; then
``.venv/bin/python benchmarks/fetch_once.py <run log> <transfer log> [--label NAME]`` prints a Markdown table: per
task its wall time (kfp.local's "Executing task" to "finished" lines), the artifact files it downloaded (count,
bytes), the manifests and other small objects it read whole, and how many of its file downloads fetched a file that
had already been downloaded earlier in the run. Downloads are given to the task whose time window holds them.
"""

import argparse
import datetime as dt
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - INFO - (Executing task|Task) '([\w-]+)'( finished with status (\w+))?")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def task_windows(log: Path) -> dict[str, tuple[float, float]]:
    """Task name -> (start, end) as seconds of the day (the log's clock, which is UTC here)."""
    starts: dict[str, float] = {}
    windows: dict[str, tuple[float, float]] = {}
    for raw in log.read_text(errors="replace").splitlines():
        match = LINE.match(ANSI.sub("", raw))
        if not match:
            continue
        h, m, s = match.group(1).split(":")
        t = int(h) * 3600 + int(m) * 60 + float(s)
        if match.group(2) == "Executing task":
            starts[match.group(3)] = t
        elif match.group(4):
            windows[match.group(3)] = (starts[match.group(3)], t)
    return windows


def table(log: Path, transfers: Path, label: str) -> str:
    windows = task_windows(log)
    rows = [json.loads(line) for line in transfers.read_text().splitlines() if line.strip()]
    per: dict[str, Counter[str]] = defaultdict(Counter)
    seen: set[str] = set()
    for row in sorted(rows, key=lambda r: r["time"]):
        stamp = dt.datetime.fromtimestamp(row["time"], dt.UTC)
        t = stamp.hour * 3600 + stamp.minute * 60 + stamp.second + stamp.microsecond / 1e6
        task = next((name for name, (a, b) in windows.items() if a <= t <= b), "(outside any task)")
        if row["kind"] == "file":
            per[task]["files"] += 1
            per[task]["file_bytes"] += row["bytes"]
            per[task]["again"] += row["key"] in seen
            seen.add(row["key"])
        else:
            per[task]["objects"] += 1
            per[task]["object_bytes"] += row["bytes"]
    out = [
        f"**{label}**",
        "",
        "| task | wall s | files downloaded | MB (files) | already fetched before | objects read | MB (objects) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    total: Counter[str] = Counter()
    for name, (a, b) in sorted(windows.items(), key=lambda item: item[1][0]):
        c = per.get(name, Counter())
        total.update(c)
        out.append(
            f"| {name} | {b - a:.1f} | {c['files']} | {c['file_bytes'] / 1e6:.2f} | {c['again']} | {c['objects']} | "
            f"{c['object_bytes'] / 1e6:.2f} |"
        )
    first, last = min(a for a, _ in windows.values()), max(b for _, b in windows.values())
    distinct = len({r["key"] for r in rows if r["kind"] == "file"})
    out.append(
        f"| **all** | {last - first:.1f} | {total['files']} ({distinct} distinct) | {total['file_bytes'] / 1e6:.2f} | "
        f"{total['again']} | {total['objects']} | {total['object_bytes'] / 1e6:.2f} |"
    )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("transfers", type=Path)
    parser.add_argument("--label", default="run")
    args = parser.parse_args()
    print(table(args.log, args.transfers, args.label))


if __name__ == "__main__":
    main()
