"""Cut a zstd stream into input slices whose decoded size is bounded, so a decompression bomb cannot take
the host's memory.

zstandard's `decompressobj().decompress(data)` has no output limit: 8 KiB of hostile input decode to
hundreds of MiB in one call. Its `stream_reader` bounds the output but says nothing when the input ends
inside a frame. So the reader (`compress._DecompressRaw`) keeps the decompressobj, which reports truncation,
and feeds it the slices this module cuts.

The cut follows the frame format (RFC 8878): a frame is a 4-byte magic, a header whose length the frame
header descriptor gives, then blocks, each a 3-byte header (last-block bit, type, size) and its content
(`size` bytes; 1 byte for an RLE block), then an optional 4-byte checksum. No block decodes to more than
128 KiB (Block_Maximum_Size), so a slice holding at most `limit / 128 KiB` block starts decodes to at most
`limit` bytes. Skippable frames decode to nothing. Bytes that are not a frame where one should start
(zero padding, garbage) and reserved block types are handed on whole: the decoder skips padding and rejects
the rest without producing output.
"""

from __future__ import annotations

from collections.abc import Callable

_MAGIC = b"\x28\xb5\x2f\xfd"
_SKIPPABLE_TAIL = b"\x2a\x4d\x18"
_BLOCK_MAX = 128 << 10
_READ = 1 << 16
_DICT_ID_BYTES = (0, 1, 2, 4)
_CONTENT_SIZE_BYTES = (0, 2, 4, 8)


class ZstdSlicer:
    """Yields the bytes of a zstd stream read through `read(n)`, in slices that decode to at most `limit`
    bytes each (`next_slice`, b'' at the end). `head` is what was already read for magic detection."""

    def __init__(self, head: bytes, read: Callable[[int], bytes], limit: int = 4 << 20) -> None:
        self._buf = bytearray(head)
        self._pos = 0
        self._read = read
        self._eof = False
        self._blocks_per_slice = max(1, limit // _BLOCK_MAX)
        self._skip = 0  # bytes to pass without looking at them (headers, block content, checksums)
        self._next = "frame"  # what starts after the skipped bytes: frame | block | opaque
        self._checksum = False  # the current frame ends with a 4-byte checksum
        self._last = False  # the block being skipped is the frame's last

    def _have(self, count: int) -> bool:
        while len(self._buf) - self._pos < count and not self._eof:
            chunk = self._read(_READ)
            if chunk:
                self._buf += chunk
            else:
                self._eof = True
        return len(self._buf) - self._pos >= count

    def next_slice(self) -> bytes:
        start, blocks = self._pos, 0
        while self._pos - start < _READ:
            if self._skip:
                if not self._have(1):
                    break
                step = min(self._skip, len(self._buf) - self._pos)
                self._pos += step
                self._skip -= step
                if not self._skip and self._next == "after-block":
                    self._end_block()
                continue
            if self._next == "opaque":
                if not self._have(1):
                    break
                self._pos = len(self._buf)
                continue
            if self._next == "frame":
                self._start_frame()
            elif self._next == "block":
                if blocks == self._blocks_per_slice:
                    break
                if self._start_block():
                    blocks += 1
        out = bytes(self._buf[start:self._pos])
        del self._buf[:self._pos]
        self._pos = 0
        return out

    def _start_frame(self) -> None:
        if not self._have(4):
            self._next = "opaque"
            return
        magic = bytes(self._buf[self._pos:self._pos + 4])
        if magic == _MAGIC and self._have(5):
            descriptor = self._buf[self._pos + 4]
            single_segment = descriptor >> 5 & 1
            size_flag = descriptor >> 6
            content_size = _CONTENT_SIZE_BYTES[size_flag] or single_segment
            self._checksum = bool(descriptor >> 2 & 1)
            self._skip = 5 + (1 - single_segment) + _DICT_ID_BYTES[descriptor & 3] + content_size
            self._next = "block"
        elif magic[0] & 0xF0 == 0x50 and magic[1:] == _SKIPPABLE_TAIL and self._have(8):
            self._skip = 8 + int.from_bytes(self._buf[self._pos + 4:self._pos + 8], "little")
            self._next = "frame"
        else:
            self._next = "opaque"

    def _start_block(self) -> bool:
        """Step over a block header; False when there is none to read (the stream is cut short)."""
        if not self._have(3):
            self._next = "opaque"
            return False
        header = int.from_bytes(self._buf[self._pos:self._pos + 3], "little")
        kind = header >> 1 & 3
        if kind == 3:  # reserved: the decoder rejects it
            self._next = "opaque"
            return False
        self._last = bool(header & 1)
        self._skip = 3 + (1 if kind == 1 else header >> 3)
        self._next = "after-block"
        return True

    def _end_block(self) -> None:
        if self._last:
            self._skip = 4 if self._checksum else 0
            self._next = "frame"
        else:
            self._next = "block"
