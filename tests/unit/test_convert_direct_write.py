"""ChunkedFile: the bytes on disk are exactly the tensors cast and laid back to back, whatever the chunk boundaries."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vesselseg.convert.direct_write import ALIGN, ChunkedFile, ChunkPool


def expected_bytes(header: bytes, parts: list[tuple[torch.Tensor, torch.dtype]]) -> bytes:
    return header + b"".join(value.to(dtype).reshape(-1).view(torch.uint8).numpy().tobytes() for value, dtype in parts)


SHM = Path("/dev/shm")  # tmpfs: kernels before 6.6 refuse O_DIRECT there, and the chunks go through the page cache


@pytest.mark.parametrize("where", ["disk", "tmpfs"])
def test_chunked_file_holds_the_cast_tensors_byte_for_byte(tmp_path: Path, where: str) -> None:
    if where == "tmpfs" and not SHM.is_dir():
        pytest.skip("no /dev/shm on this machine")
    path = (tmp_path if where == "disk" else SHM) / f"vesselseg-test-{tmp_path.name}.safetensors"
    generator = torch.Generator().manual_seed(0)
    parts = [
        (torch.randn(3, 5, generator=generator), torch.bfloat16),
        (torch.tensor([True, False, True]), torch.bool),  # 3 bytes: what follows is not element-aligned
        (torch.randn(ALIGN + 7, generator=generator), torch.float32),  # spans chunk boundaries unaligned
        (torch.arange(5, dtype=torch.int64), torch.int64),
        (torch.randn(4 * ALIGN, generator=generator, dtype=torch.float64), torch.bfloat16),  # cast on the way in
        (torch.randn(11, generator=generator), torch.float16),  # the tail: not a whole block
    ]
    header = b"\x15" * 13
    pool = ChunkPool(2 * ALIGN, count=3)
    try:
        with ChunkedFile(path, pool) as handle:
            handle.put_bytes(header)
            for value, dtype in parts:
                handle.put(value, dtype)
        assert path.read_bytes() == expected_bytes(header, parts)
        assert handle.size == path.stat().st_size
    finally:
        pool.close()
        path.unlink(missing_ok=True)


def test_chunk_size_must_be_whole_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of 4096"):
        ChunkPool(ALIGN + 512, count=2)
