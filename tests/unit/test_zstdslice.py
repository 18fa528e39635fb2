"""The zstd slicer: slices that rebuild the stream exactly and each decode to a bounded size, so a
decompression bomb read through `decompress_stream` stays in bounded memory."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from pybuild.errors import StoreError
from pybuild.store.compress import decompress_stream
from pybuild.store.zstdslice import ZstdSlicer

SKIPPABLE = b"\x5a\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"hello"


def _bomb(mib: int) -> bytes:
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=19).stream_writer(out, closefd=False) as writer:
        for _ in range(mib):
            writer.write(bytes(1 << 20))
    return out.getvalue()


def _slices(data: bytes, limit: int) -> list[bytes]:
    slicer = ZstdSlicer(data[:4], io.BytesIO(data[4:]).read, limit)
    out = []
    while piece := slicer.next_slice():
        out.append(piece)
    return out


STREAMS = {
    "bomb": _bomb(64),
    "frames": zstandard.ZstdCompressor(write_checksum=True).compress(b"ab" * 300_000)
    + SKIPPABLE + zstandard.ZstdCompressor(write_content_size=False).compress(bytes(range(256)) * 999),
    "threads": zstandard.ZstdCompressor(threads=2).compress(b"0123456789" * 500_000),
    "padded": zstandard.ZstdCompressor().compress(b"x" * 1000) + bytes(77),
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_slices_rebuild_the_stream_and_decode_bounded(name: str) -> None:
    data = STREAMS[name]
    limit = 1 << 20
    slices = _slices(data, limit)
    assert b"".join(slices) == data
    decoder, pending, largest = zstandard.ZstdDecompressor().decompressobj(), b"", 0
    for piece in slices:
        piece, pending = pending + piece, b""
        if not piece.strip(b"\0"):
            continue  # zero padding between frames (decompress_stream skips it the same way)
        largest = max(largest, len(decoder.decompress(piece)))
        if decoder.eof:
            pending, decoder = decoder.unused_data, zstandard.ZstdDecompressor().decompressobj()
    assert largest <= limit + (128 << 10)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_decompress_stream_reads_every_stream(name: str) -> None:
    data = STREAMS[name]
    want = b"".join(zstandard.ZstdDecompressor().read_to_iter(io.BytesIO(data.rstrip(b"\0") if name == "padded" else data)))
    if name == "frames":
        want = zstandard.ZstdDecompressor().decompress(data.split(SKIPPABLE)[0]) + \
            zstandard.ZstdDecompressor().decompressobj().decompress(data.split(SKIPPABLE)[1])
    assert decompress_stream(io.BytesIO(data)).read() == want


@pytest.mark.parametrize("cut", [5, 9, 40, -1])
def test_a_cut_stream_is_still_an_error(cut: int) -> None:
    data = STREAMS["frames"]
    with pytest.raises(StoreError, match="truncated zstd stream"):
        decompress_stream(io.BytesIO(data[:cut])).read()


def test_a_bomb_decodes_in_bounded_memory(tmp_path: Path) -> None:
    """2 GiB of zeros in ~64 KiB of zstd: the reader's peak RSS stays far below the decoded size."""
    bomb = tmp_path / "bomb.zst"
    bomb.write_bytes(_bomb(2048))
    script = (
        "import re, sys\n"
        "from pybuild.store.compress import decompress_stream\n"
        "reader, total = decompress_stream(open(sys.argv[1], 'rb')), 0\n"
        "while chunk := reader.read(1 << 20):\n"
        "    total += len(chunk)\n"
        "status = open('/proc/self/status').read()\n"  # VmHWM: ru_maxrss would count the forking parent
        "print(total, int(re.search(r'VmHWM:\\s+(\\d+)', status).group(1)) // 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, check=True)
    total, rss_mib = map(int, done.stdout.split())
    assert total == 2048 << 20
    assert rss_mib < 150, f"peak RSS {rss_mib} MiB decoding a 2 GiB bomb"
