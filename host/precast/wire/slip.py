"""SLIP framing (RFC 1055): payloads over a serial line.

A frame is END (0xC0), the payload with END escaped as ESC ESC_END
(0xDB 0xDC) and ESC as ESC ESC_ESC (0xDB 0xDD), then END. A leading END
flushes line noise; empty frames (END END) carry nothing and are skipped.
RFC 1055 leaves a bad escape to the implementation: here ESC followed by
anything but ESC_END or ESC_ESC, or a frame longer than the largest
payload, makes the whole frame corrupt, counted and dropped.
"""

from __future__ import annotations

import re

from precast.wire.constants import MAX_PAYLOAD

END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD
_END = bytes([END])
_BAD_ESCAPE = re.compile(rb"\xdb(?![\xdc\xdd])")


def encode(payload: bytes | bytearray | memoryview) -> bytes:
    """One SLIP frame: END, the escaped payload, END."""
    body = bytes(payload).replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
    return _END + body + _END


class Decoder:
    """Splits a byte stream into payloads; `corrupt` counts the frames dropped as bad."""

    def __init__(self, max_len: int = MAX_PAYLOAD) -> None:
        self.max_len = max_len
        self.corrupt = 0
        self.frames = 0  # non-empty frames seen, corrupt ones included
        self._pending = b""
        self._overflow = False

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads that `data` completes, in order."""
        parts = (self._pending + data).split(_END)
        self._pending = parts.pop()
        out: list[bytes] = []
        for raw in parts:
            overflow, self._overflow = self._overflow, False
            if not raw and not overflow:
                continue
            self.frames += 1
            if overflow or _BAD_ESCAPE.search(raw) or raw.endswith(b"\xdb"):
                self.corrupt += 1
                continue
            payload = raw.replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")
            if len(payload) > self.max_len:
                self.corrupt += 1
                continue
            out.append(payload)
        if len(self._pending) > 2 * self.max_len + 2:
            # No END in sight: drop what piled up, and the frame it belongs to.
            self._pending = b""
            self._overflow = True
        return out
