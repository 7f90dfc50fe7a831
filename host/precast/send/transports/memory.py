"""The in-memory transport: keeps every frame it is given, for tests."""

from __future__ import annotations

from precast.send.transports import FrameRows, rows_of


class MemoryTransport:
    """Appends each frame, as bytes, to `frames`."""

    description = "memory"
    last_error: OSError | None = None

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send_frames(self, frames: FrameRows) -> int:
        self.frames.extend(bytes(f) for f in rows_of(frames))
        return 0

    def close(self) -> None:
        pass
