"""Packet transport: the whole Ethernet frame through an AF_PACKET raw socket (Linux).

For the unix port on a Linux board: the frame goes out on cfg.IFACE
exactly as the template built it (MACs, IPv4 and UDP headers, checksum).
The unix port's `socket` has no AF_PACKET names but passes numbers and a
raw sockaddr through to libc, so the socket is made with AF_PACKET (17)
and bound with a packed `struct sockaddr_ll`. Protocol 0 means the socket
sends only and never queues received frames.
"""

import socket
import struct

AF_PACKET = 17


def _ifindex(iface):
    with open("/sys/class/net/%s/ifindex" % iface) as f:
        return int(f.read())


def sockaddr_ll(ifindex):
    """struct sockaddr_ll: family, protocol (big-endian), ifindex, hatype, pkttype, halen, addr."""
    return struct.pack("@HHiHBB8s", AF_PACKET, 0, ifindex, 0, 0, 0, b"")


class Transport:
    """send(mv) raises OSError on failure; reopen() makes a fresh socket."""

    FRAME = True  # sends the whole frame

    def __init__(self, tpl, cfg):
        iface = getattr(cfg, "IFACE", None)
        if not iface:
            raise ValueError("the packet transport needs an interface (--iface)")
        self.iface = iface
        self.sock = None
        self.reopen()

    def reopen(self):
        """(Re)open and bind to the interface (its index may change when it comes back)."""
        self.close()
        s = socket.socket(AF_PACKET, socket.SOCK_RAW, 0)
        s.bind(sockaddr_ll(_ifindex(self.iface)))
        self.sock = s
        # The socket's own send, bound once: no Python frame between the loop and the socket.
        self.send = s.send  # type: ignore[method-assign]

    def send(self, mv):  # replaced by the socket's send once open; until then the same call
        self.sock.send(mv)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
