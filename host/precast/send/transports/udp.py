"""The UDP transport: a plain socket sends each frame's payload; the kernel builds the headers."""

from __future__ import annotations

import socket

from precast.args import parse_hostport
from precast.errors import TransportError, UsageError
from precast.send.transports import FrameRows, rows_of
from precast.wire.constants import PAYLOAD_OFFSET


class UdpTransport:
    """Sends payloads from a connected UDP socket; a refused send counts as an error."""

    def __init__(self, hostport: str) -> None:
        try:
            host, port = parse_hostport(hostport)
        except UsageError as e:
            raise TransportError(f"udp: {e}") from None
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            self._sock = socket.socket(info[0], socket.SOCK_DGRAM)
            self._sock.connect(info[4])
        except OSError as e:
            raise TransportError(f"udp {hostport}: {e.strerror or e}") from None
        self.description = f"udp to {host}:{port}"
        self.last_error: OSError | None = None

    def send_frames(self, frames: FrameRows) -> int:
        errors = 0
        send = self._sock.send
        for f in rows_of(frames):
            try:
                send(memoryview(f)[PAYLOAD_OFFSET:])
            except OSError as e:
                self.last_error = e
                errors += 1
        return errors

    def close(self) -> None:
        self._sock.close()
