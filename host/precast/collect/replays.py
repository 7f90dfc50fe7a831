"""Replays: a frame identical to one already stored for its device, in any epoch, is refused.

The window's bitmap (tracker.py) knows which seqs of a device's current epoch
were stored, not what they carried: after a reboot or an operator's reset a
new epoch starts, and a recorded frame of the old one with a seq the new
epoch has not reached (or one below its first reading) would be stored a
second time; a recorded frame below the window would be held, and a second
one would confirm it as a reboot. So the tracker also keeps, per device, a
digest of each of its last KEPT stored frames (8 bytes: the seq and the
frame's last 4 bytes, that is the MIC's, or a CRC-16 and the two bytes
before it) and refuses a frame whose digest is among them as a replay
(docs/PROTOCOL.md, receiver step 5).

Bounded by size: KEPT + SLACK digests a device, 10 KiB (100 MiB for 10,000
devices that each sent KEPT frames). Kept in memory only: a restart starts
with none (the bitmap still holds the current epoch), and what was stored more
than KEPT frames ago is not recognised. A CRC frame shares its digest with a
different frame of the same seq whose last field bytes and CRC-16 are the same
(2**-16 at most of those compared); a MIC's 4 bytes are a cryptographic digest.
"""

from __future__ import annotations

import numpy as np

KEPT = 1024  # digests a device keeps (at least the default window, so a reset's old window)
SLACK = 256  # appended beyond KEPT before the oldest are dropped (one move per SLACK frames)
DIGEST = 8
MIN_FRAME = 14  # a header and the shortest check
LIMIT = (KEPT + SLACK) * DIGEST  # bytes of digests a device keeps at most


def digest(data: bytes) -> bytes:
    """A frame's digest: its seq (bytes 8-11 of a payload) and its last 4 bytes; b"" for a
    frame without its bytes."""
    return data[8:12] + data[-4:] if len(data) >= MIN_FRAME else b""


class Digests:
    """One device's digests of its last stored frames, and the seqs of ended epochs among them."""

    __slots__ = ("data", "hi", "lo")

    def __init__(self) -> None:
        self.data = bytearray()
        # The seqs of digests kept from ended epochs lie in [lo, hi]: a new frame outside it
        # cannot be one of them (lo > hi: none).
        self.lo = 1
        self.hi = 0

    def __contains__(self, d: bytes) -> bool:
        data = self.data
        at = data.find(d)
        while at >= 0:
            if at % DIGEST == 0:
                return True
            at = data.find(d, at + 1)
        return False

    def add(self, d: bytes) -> None:
        """Keep a stored frame's digest."""
        self.data += d

    def trim(self) -> None:
        """Drop the oldest beyond KEPT, once SLACK more have come."""
        if len(self.data) > LIMIT:
            del self.data[: len(self.data) - KEPT * DIGEST]

    def end_epoch(self) -> None:
        """The device's epoch ends: every digest kept is now an old epoch's."""
        if self.data:
            seqs = np.frombuffer(bytes(self.data), ">u4")[::2]
            self.lo, self.hi = int(seqs.min()), int(seqs.max())

    def old(self, seq: int) -> bool:
        """Whether seq may be that of a kept digest of an ended epoch."""
        return self.lo <= seq <= self.hi
