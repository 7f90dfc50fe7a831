"""UDP transport: a connected datagram socket that sends the payload.

The kernel (unix port) or lwIP (ESP32, Pico W) builds the Ethernet, IPv4
and UDP headers, so only the payload memoryview goes out. The destination
is the template's [network] dst_ip:dst_port (or --collector at build time).
"""

import socket


class Transport:
    """send(mv) raises OSError on failure; reopen() makes a fresh socket."""

    FRAME = False  # sends the payload, not the whole frame

    def __init__(self, tpl, cfg=None):
        self._addr = socket.getaddrinfo(tpl.DST_IP, tpl.DST_PORT)[0][-1]
        self.sock = None
        self.reopen()

    def reopen(self):
        """(Re)connect: after a closed socket or a lost link."""
        self.close()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(self._addr)
        self.sock = s
        # The socket's own send, bound once: no Python frame between the loop and the socket.
        self.send = s.send  # type: ignore[method-assign]

    def send(self, mv):  # replaced by the socket's send once open; until then the same call
        self.sock.send(mv)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
