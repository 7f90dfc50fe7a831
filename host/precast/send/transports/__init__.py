"""Where frames go: transports picked by URL scheme, one module each.

    packet://IFACE           AF_PACKET raw, batched through a PACKET_TX_RING
    packet://IFACE?ring=off  AF_PACKET raw, one send() per frame
    udp://HOST:PORT          a UDP socket: the payload alone, no privilege needed
    pcap://PATH              a pcap file of what would be sent
    memory://                a list in memory, for tests

Every transport takes whole compiled frames, either as a (rows, length)
uint8 array or as a sequence of byte strings, and returns how many it
could not send; a UDP transport sends each frame's payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import numpy.typing as npt

from precast.errors import TransportError

FrameRows = npt.NDArray[Any] | Sequence[bytes | bytearray | memoryview]


class Transport(Protocol):
    """Sends whole frames; `send_frames` returns the number it could not send.

    `last_error` is the last refusal the system gave (None while every send went out), so
    that a summary can say in words why frames were not sent.
    """

    description: str
    last_error: OSError | None

    def send_frames(self, frames: FrameRows) -> int: ...

    def close(self) -> None: ...


def rows_of(frames: FrameRows) -> Sequence[Any]:
    """Each frame as a buffer: an array's rows, or the sequence itself."""
    if hasattr(frames, "ndim"):
        return list(frames)
    return frames


def open_transport(url: str, **options: Any) -> Transport:
    """Open the transport a URL names (see the module docstring)."""
    u = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(u.query).items()}
    if u.scheme == "packet":
        from precast.send.transports.packet import PacketTransport

        ring = query.get("ring", "on") not in ("off", "0", "no")
        return PacketTransport(u.netloc or u.path, ring=ring, **options)
    if u.scheme == "udp":
        from precast.send.transports.udp import UdpTransport

        return UdpTransport(u.netloc)
    if u.scheme == "pcap":
        from precast.send.transports.pcapfile import PcapTransport

        return PcapTransport(u.netloc + u.path)
    if u.scheme == "memory":
        from precast.send.transports.memory import MemoryTransport

        return MemoryTransport()
    raise TransportError(f"unknown transport {url!r} (packet://, udp://, pcap://, memory://)")
