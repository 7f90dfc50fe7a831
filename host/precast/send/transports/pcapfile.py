"""The pcap transport: writes what would be sent to a capture file, no privilege needed."""

from __future__ import annotations

from pathlib import Path

from precast.send.transports import FrameRows, rows_of
from precast.wire.pcap import PcapWriter


class PcapTransport:
    """Appends each frame to a new pcap file, timestamped as it is written."""

    def __init__(self, path: str | Path) -> None:
        self.description = f"pcap file {path}"
        self.last_error: OSError | None = None
        self._w = PcapWriter(path)

    def send_frames(self, frames: FrameRows) -> int:
        for f in rows_of(frames):
            self._w.write(f)
        return 0

    def close(self) -> None:
        self._w.close()
