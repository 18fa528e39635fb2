"""Layer compression: round trips through real tools, determinism, errors, bounded memory."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zlib

import pytest

from pybuild.errors import StoreError
from pybuild.store.compress import compress, decompress_stream, detect_compression, open_compressor

DATA = (os.urandom(200_000) + b"the quick brown fox jumps over the lazy dog\n" * 40_000) * 3  # ~5.9 MB


def run(data: bytes, compression: str, level: int | None = None) -> tuple[bytes, str, int]:
    out = io.BytesIO()
    digest, size = compress(io.BytesIO(data), out, compression, level)
    return out.getvalue(), digest, size


@pytest.mark.parametrize("compression", ["gzip", "zstd", "uncompressed"])
@pytest.mark.parametrize("data", [DATA, b"", b"x"], ids=["big", "empty", "one-byte"])
def test_round_trip(compression: str, data: bytes) -> None:
    blob, digest, size = run(data, compression)
    assert size == len(blob) and digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert detect_compression(blob[:4]) == compression or (compression == "uncompressed")
    assert decompress_stream(io.BytesIO(blob)).read() == data
    assert decompress_stream(io.BytesIO(blob), compression).read() == data


def test_gzip_is_multi_member_and_python_gzip_reads_it() -> None:
    blob, _, _ = run(DATA, "gzip")
    assert gzip.decompress(blob) == DATA
    assert blob[4:8] == b"\0\0\0\0" and blob[9] == 255  # mtime 0, OS unknown: no host details
    assert blob.count(b"\x1f\x8b\x08\x00\x00\x00\x00\x00") >= len(DATA) // (1 << 20)


@pytest.mark.skipif(not shutil.which("gzip"), reason="gzip not installed")
def test_gzip_cli_reads_it() -> None:
    blob, _, _ = run(DATA, "gzip")
    assert subprocess.run(["gzip", "-dc"], input=blob, capture_output=True, check=True).stdout == DATA


@pytest.mark.skipif(not shutil.which("zstd"), reason="zstd not installed")
def test_zstd_cli_reads_it() -> None:
    blob, _, _ = run(DATA, "zstd")
    assert subprocess.run(["zstd", "-dc"], input=blob, capture_output=True, check=True).stdout == DATA


@pytest.mark.parametrize("compression", ["gzip", "zstd", "uncompressed"])
def test_deterministic(compression: str) -> None:
    assert run(DATA, compression) == run(DATA, compression)


def test_level_changes_output_and_default_is_6() -> None:
    assert run(DATA, "gzip", 1)[0] != run(DATA, "gzip", 9)[0]
    assert run(DATA, "gzip")[0] == run(DATA, "gzip", 6)[0]


def test_gzip_ratio_close_to_single_stream() -> None:
    blob, _, _ = run(DATA, "gzip", 6)
    assert len(blob) <= len(zlib.compress(DATA, 6)) * 1.01


def test_write_in_odd_chunks_same_bytes() -> None:
    out = io.BytesIO()
    writer = open_compressor(out, "gzip")
    for i in range(0, len(DATA), 77_777):
        writer.write(DATA[i:i + 77_777])
    writer.close()
    assert out.getvalue() == run(DATA, "gzip")[0]


def test_unsupported_compression_and_level() -> None:
    with pytest.raises(StoreError, match="unsupported compression"):
        run(b"x", "bzip2")
    with pytest.raises(StoreError, match="level"):
        run(b"x", "gzip", 12)
    with pytest.raises(StoreError, match="unsupported compression"):
        decompress_stream(io.BytesIO(b"x"), "lz4")


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_truncated_stream_is_store_error(compression: str) -> None:
    blob, _, _ = run(DATA, compression)
    for cut in (5, 20, len(blob) // 2, len(blob) - 1):
        with pytest.raises(StoreError, match=f"truncated {compression}|corrupt {compression}"):
            decompress_stream(io.BytesIO(blob[:cut])).read()


def test_corrupt_gzip_is_store_error() -> None:
    blob = bytearray(run(DATA, "gzip")[0])
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(StoreError, match="corrupt gzip"):
        decompress_stream(io.BytesIO(bytes(blob))).read()


def test_trailing_zero_padding_tolerated() -> None:
    blob = run(b"abc", "gzip")[0] + b"\0" * 100
    assert decompress_stream(io.BytesIO(blob)).read() == b"abc"


_MEMORY_SCRIPT = """
import sys
from pybuild.store.compress import compress

def peak_kib():
    # VmHWM belongs to this process's address space, which exec made new; ru_maxrss would carry the
    # parent's (a big pytest worker's) peak across fork and exec.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise SystemExit("no VmHWM")

class Source:
    def __init__(self, total):
        self.left = total
        self.block = (bytes(range(256)) * 2048 + b"layer data " * 40000)[:1 << 20]
    def read(self, n=-1):
        if self.left <= 0:
            return b""
        n = min(self.left, len(self.block) if n < 0 else min(n, len(self.block)))
        self.left -= n
        return self.block[:n]

class Null:
    def write(self, data):
        return len(data)

before = peak_kib()
compress(Source(300 << 20), Null(), sys.argv[1], 1)
print(before, peak_kib())
"""


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_peak_memory_bounded_on_300_mb(compression: str) -> None:
    done = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, compression], capture_output=True,
                          text=True, check=True)
    _before, peak_kib = map(int, done.stdout.split())
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib} KiB"
