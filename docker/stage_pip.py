"""Stage build/pip/ for an image build from the host's own pip configuration (`pip config list`).

- ca.pem: the CA bundle the host's pip trusts (`cert`, e.g. a TLS-intercepting proxy's), empty when pip uses its
  default; the Dockerfiles use it in their builder stage only.
- wheels/: every file of the lock's exact versions found in the host's local wheel sources (`find-links`
  directories and `file://` simple indexes), hard-linked where possible: pip in the build prefers them and takes
  the rest from the default index. This is how a lock pin that no reachable index serves (torch's `+cpu` build
  where the PyTorch index is out of reach) gets into an image.
- Prints the torch index URL given as argument if it answers, else nothing (then pip's configuration decides).

    python3 docker/stage_pip.py requirements.lock build/pip [torch-index-url]
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_config() -> dict[str, list[str]]:
    """Every `key=value` of `pip config list`, by key without its scope (`global.cert` and `:env:.cert` → cert)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False, timeout=60
    )
    values: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values.setdefault(key.rsplit(".", 1)[-1], []).append(value.strip().strip("'\""))
    return values


def lock_pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            pins[normalize(name)] = version.strip()
    return pins


def dist_key(filename: str) -> tuple[str, str] | None:
    """(normalized name, version) of a wheel or sdist file name."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return (normalize(parts[0]), parts[1]) if len(parts) >= 5 else None
    match = re.match(r"(.+)-([^-]+)\.(tar\.gz|zip)$", filename)
    return (normalize(match.group(1)), match.group(2)) if match else None


def local_files(config: dict[str, list[str]], names: set[str]) -> list[Path]:
    """Files in find-links directories and in `file://` simple indexes (only the lock's project pages)."""
    found: list[Path] = []
    for entry in (v for value in config.get("find-links", []) for v in value.split()):
        folder = Path(unquote(urlparse(entry).path) if entry.startswith("file:") else entry)
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.is_file()]
    for entry in (
        v for key in ("index-url", "extra-index-url") for value in config.get(key, []) for v in value.split()
    ):
        if not entry.startswith("file:"):
            continue
        root = Path(unquote(urlparse(entry).path))
        for name in names:
            page = root / name / "index.html"
            if page.is_file():
                for href in re.findall(r'href="([^"#]+)', page.read_text()):
                    target = (page.parent / unquote(href)).resolve()
                    if target.is_file():
                        found.append(target)
    return found


def ca_bundle(config: dict[str, list[str]]) -> Path | None:
    for value in [os.environ.get("PIP_CERT", ""), *config.get("cert", [])]:
        if value and Path(value).is_file():
            return Path(value)
    return None


def answers(url: str, cafile: Path | None) -> bool:
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            return response.status == 200
    except OSError:
        return False


def main(lock: Path, out: Path, torch_index: str | None) -> None:
    config = pip_config()
    pins = lock_pins(lock)
    shutil.rmtree(out, ignore_errors=True)
    (out / "wheels").mkdir(parents=True)
    cert = ca_bundle(config)
    (out / "ca.pem").write_bytes(cert.read_bytes() if cert else b"")
    staged = 0
    for path in local_files(config, set(pins)):
        key = dist_key(path.name)
        if key and pins.get(key[0]) == key[1] and not (out / "wheels" / path.name).exists():
            try:
                os.link(path, out / "wheels" / path.name)
            except OSError:
                shutil.copyfile(path, out / "wheels" / path.name)
            staged += 1
    print(f"build/pip: CA bundle {cert or 'none (pip default)'}; {staged} local files of lock pins", file=sys.stderr)
    if torch_index and answers(torch_index.rstrip("/") + "/torch/", cert):
        print(torch_index)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
