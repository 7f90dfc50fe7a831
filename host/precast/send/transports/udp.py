"""The UDP transport: a plain socket sends each frame's payload; the kernel builds the headers."""

from __future__ import annotations

import socket

from precast.errors import TransportError
from precast.send.transports import FrameRows, rows_of
from precast.wire.constants import PAYLOAD_OFFSET


def parse_hostport(text: str) -> tuple[str, int]:
    """HOST:PORT (or [V6]:PORT) as a (host, port) pair, or a TransportError."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TransportError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


class UdpTransport:
    """Sends payloads from a connected UDP socket; a refused send counts as an error."""

    def __init__(self, hostport: str) -> None:
        host, port = parse_hostport(hostport)
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            self._sock = socket.socket(info[0], socket.SOCK_DGRAM)
            self._sock.connect(info[4])
        except OSError as e:
            raise TransportError(f"udp {hostport}: {e.strerror or e}") from None
        self.description = f"udp to {host}:{port}"

    def send_frames(self, frames: FrameRows) -> int:
        errors = 0
        send = self._sock.send
        for f in rows_of(frames):
            try:
                send(memoryview(f)[PAYLOAD_OFFSET:])
            except OSError:
                errors += 1
        return errors

    def close(self) -> None:
        self._sock.close()
