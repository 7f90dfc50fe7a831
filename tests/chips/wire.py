"""The models' wire (MicroPython): a transmitted frame leaves through an AF_PACKET socket.

A chip model calls `wire.send(buf, n)` with its staging buffer when its
MAC would put n bytes on the cable. With an interface name the bytes go
out of that interface (a veth whose far end is in a namespace the test
made, where the kernel judges them); without one the wire only counts.
The slice and the send allocate, so they run with the heap unlocked for
the moment: that is the model's bookkeeping, kept out of heap_lock (the
driver under test never runs in here).
"""

import socket

import micropython


def heap_depth():
    """How deep micropython.heap_lock() is now (lock once more, and unlock it again)."""
    micropython.heap_lock()
    return micropython.heap_unlock()


class Wire:
    """frames: how many went out; octets: their bytes; shortest/longest lengths seen."""

    def __init__(self, iface=None):
        self.sock = None
        if iface:
            from precast_fw.transport_packet import AF_PACKET, _ifindex, sockaddr_ll

            s = socket.socket(AF_PACKET, socket.SOCK_RAW, 0)
            s.bind(sockaddr_ll(_ifindex(iface)))
            self.sock = s
        self.frames = 0
        self.octets = 0
        self.shortest = 0
        self.longest = 0

    def send(self, buf, n):
        self.frames += 1
        self.octets += n
        if self.shortest == 0 or n < self.shortest:
            self.shortest = n
        if n > self.longest:
            self.longest = n
        if self.sock is None:
            return
        depth = heap_depth()
        if depth:
            micropython.heap_unlock()
        try:
            self.sock.send(memoryview(buf)[:n])
        finally:
            if depth:
                micropython.heap_lock()

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
