"""recvmmsg through ctypes reads exactly what recvfrom reads: every size, every source."""

from __future__ import annotations

import socket

import pytest
from precast.collect.receiver import MultiReceiver, Receiver

SIZES = [0, 1, 13, 24, 1472, 1473, 9000, 65507]


ROUND = 2 * sum(SIZES) + len(SIZES) * 2048  # a round of SIZES in a receive buffer, generously


def rounds(sock: socket.socket) -> int:
    """Rounds of SIZES the socket's buffer holds (root forces 8 MiB past net.core.rmem_max;
    without root the machine's rmem_max decides, and fewer rounds are sent)."""
    return max(1, min(40, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // ROUND))


def fill(sock: socket.socket, senders: list[socket.socket]) -> list[tuple[bytes, str]]:
    sent = []
    for i, n in enumerate(SIZES * rounds(sock)):
        s = senders[i % len(senders)]
        data = bytes((i + k) % 256 for k in range(min(n, 64))) + b"\xab" * max(0, n - 64)
        s.sendto(data, sock.getsockname()[:2])
        host, port = s.getsockname()[:2]
        sent.append((data, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"))
    return sent


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_both_receivers_read_the_same(family: int, host: str) -> None:
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((host, 0))
    except OSError as e:
        pytest.skip(f"no {host}: {e}")
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 8 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setblocking(False)
    senders = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(3)]
    for s in senders:
        s.bind((host, 0))
    try:
        for kind in (Receiver, MultiReceiver):
            sent = fill(sock, senders)
            r = kind(sock)
            got: list[tuple[bytes, str]] = []
            while batch := r.read(100):
                assert len(batch) <= 100
                got += [(d, r.describe(a)) for d, a in batch]
            assert got == sent, kind.__name__
    finally:
        sock.close()
        for s in senders:
            s.close()
