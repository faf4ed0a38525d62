"""One line naming the machine a benchmark ran on, the same way in every benchmark's output."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def proc_field(path: str, field: str) -> str:
    """The first value of `field` in a /proc file of `field: value` lines ('?' where there is none)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return "?"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(field)), "?")


def describe() -> str:
    """Host, CPU model and cores, RAM, the GPUs torch sees (when the benchmark uses torch), Python and torch."""
    cpu = proc_field("/proc/cpuinfo", "model name")
    if cpu == "?":
        cpu = platform.processor() or platform.machine()
    memory = proc_field("/proc/meminfo", "MemTotal").split()[0]
    ram = f"{int(memory) / 2**20:.0f} GiB RAM" if memory.isdigit() else "RAM unknown"
    parts = [f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {ram}"]
    torch = sys.modules.get("torch")  # not imported here: a numpy benchmark should not pay for it
    if torch is not None:
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        parts.append(f"{len(names)} × {names[0]}" if names and len(set(names)) == 1 else ", ".join(names) or "no GPU")
        parts.append(f"torch {torch.__version__}")
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(parts)
