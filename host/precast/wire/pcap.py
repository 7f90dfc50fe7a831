"""Read and write classic pcap captures (libpcap format) of Ethernet frames.

Format: a 24-byte global header (magic 0xa1b2c3d4 for microseconds or
0xa1b23c4d for nanoseconds, in either byte order; version 2.4; snaplen;
link type 1 = Ethernet) then per packet a 16-byte record header (seconds,
fraction, captured length, original length) and the captured bytes.
Link types 113 and 276 (Linux cooked v1 and v2: `tcpdump -i any`) are read
too.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from precast.errors import PrecastError

LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
_MAGICS = {0xA1B2C3D4: 1_000_000, 0xA1B23C4D: 1_000_000_000}


class PcapWriter:
    """Append Ethernet frames to a new pcap file (microsecond timestamps)."""

    def __init__(self, path: str | Path, snaplen: int = 65535) -> None:
        self.path = Path(path)
        try:
            self._f: BinaryIO = open(self.path, "wb")
        except OSError as e:
            raise PrecastError(f"cannot write {self.path}: {e.strerror}") from None
        self._f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))

    def write(self, frame: bytes | bytearray | memoryview, ts: float | None = None) -> None:
        t = time.time() if ts is None else ts
        sec = int(t)
        usec = int((t - sec) * 1_000_000)
        n = len(frame)
        self._f.write(struct.pack("<IIII", sec, usec, n, n))
        self._f.write(frame)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_frames(path: str | Path) -> Iterator[bytes]:
    """Yield the Ethernet frames of a pcap file; a file that is not pcap is a PrecastError."""
    p = Path(path)
    try:
        f = open(p, "rb")
    except OSError as e:
        raise PrecastError(f"cannot read {p}: {e.strerror}") from None
    with f:
        head = f.read(24)
        if len(head) < 24:
            raise PrecastError(f"{p}: not a pcap file (too short)")
        for endian in "<>":
            magic = struct.unpack(endian + "I", head[:4])[0]
            if magic in _MAGICS:
                break
        else:
            raise PrecastError(
                f"{p}: not a pcap file (magic 0x{head[:4].hex()}; pcapng is not read)"
            )
        linktype = struct.unpack(endian + "I", head[20:24])[0] & 0x0FFFFFFF
        if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2):
            raise PrecastError(f"{p}: link type {linktype} is not Ethernet")
        rec = struct.Struct(endian + "IIII")
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            _, _, caplen, _ = rec.unpack(h)
            data = f.read(caplen)
            if len(data) < caplen:
                return
            if linktype == LINKTYPE_LINUX_SLL:
                # 16-byte cooked header ending in the protocol; rebuild an Ethernet header.
                if len(data) < 16:
                    continue
                data = b"\x00" * 12 + data[14:16] + data[16:]
            elif linktype == LINKTYPE_LINUX_SLL2:
                # 20-byte cooked v2 header starting with the protocol.
                if len(data) < 20:
                    continue
                data = b"\x00" * 12 + data[0:2] + data[20:]
            yield data
