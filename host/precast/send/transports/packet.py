"""The raw transport: whole Ethernet frames on an interface through AF_PACKET.

With the TX ring (PACKET_TX_RING, TPACKET_V2) the kernel and this process
share an mmap'd ring of fixed-size slots. A slot is a 32-byte tpacket2_hdr
(tp_status u32 at 0, tp_len u32 at 4) and the frame at offset 32
(TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)). Filling a batch is numpy
copies into consecutive slots, their lengths, then their status set to
TP_STATUS_SEND_REQUEST; one send() with no data has the kernel transmit
every requested slot and, blocking, return once they are all sent, their
status back to TP_STATUS_AVAILABLE. PACKET_QDISC_BYPASS hands frames to
the driver without the qdisc layer where the kernel allows it.

Without the ring (or where the kernel refuses it) every frame is its own
send(). Either way the socket needs CAP_NET_RAW.
"""

from __future__ import annotations

import errno
import mmap
import socket
import struct
import time
from typing import Any

import numpy as np

from precast.errors import TransportError
from precast.send.transports import FrameRows, rows_of

SOL_PACKET = 263
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_QDISC_BYPASS = 20
TPACKET_V2 = 1
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_SENDING = 2
TP_STATUS_WRONG_FORMAT = 4
SLOT_DATA = 32  # TPACKET_ALIGN(sizeof(struct tpacket2_hdr))
BLOCK_SIZE = 1 << 16


def open_raw(iface: str) -> socket.socket:
    """An AF_PACKET socket bound to iface that receives nothing (protocol 0)."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError:
        raise TransportError(
            f"sending raw frames on {iface} needs CAP_NET_RAW (run as root, or "
            "`setcap cap_net_raw+ep` on the interpreter); without privilege use "
            "--udp HOST:PORT, or --pcap FILE to write what would be sent"
        ) from None
    try:
        sock.bind((iface, 0))
    except OSError as e:
        sock.close()
        if e.errno == errno.ENODEV:
            raise TransportError(f"no network interface {iface!r}") from None
        raise TransportError(f"cannot bind to {iface}: {e.strerror}") from None
    return sock


# A send on a socket bound to a deleted interface (packet_snd, tpacket_snd: no device
# for the bound ifindex) fails with ENXIO; ENODEV where the device is unregistering.
_GONE = (errno.ENXIO, errno.ENODEV)


class PacketTransport:
    """Whole frames out of one interface: through a TX ring, or one send() per frame."""

    def __init__(
        self,
        iface: str,
        ring: bool = True,
        slots: int = 4096,
        frame_len: int = 1514,
        qdisc_bypass: bool = True,
    ) -> None:
        self.iface = iface
        self.last_error: OSError | None = None
        self._sock = open_raw(iface)
        self.bypass = False
        if qdisc_bypass:
            try:
                self._sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
                self.bypass = True
            except OSError:
                pass  # older kernels: frames go through the qdisc
        self._mm: mmap.mmap | None = None
        self.slots = 0
        self.ring_note = ""
        if ring:
            try:
                self._setup_ring(slots, frame_len)
            except OSError as e:
                self.ring_note = f"no TX ring ({e.strerror}), one send() per frame"
        mode = f"TX ring of {self.slots} slots" if self._mm else "one send() per frame"
        self.description = f"packet on {iface}: {mode}{', qdisc bypass' if self.bypass else ''}"

    def _setup_ring(self, slots: int, frame_len: int) -> None:
        size = 64
        while size < SLOT_DATA + frame_len:
            size *= 2
        per_block = max(1, BLOCK_SIZE // size)
        block = max(BLOCK_SIZE, size)
        blocks = max(1, -(-slots // per_block))
        self.slots = blocks * per_block
        self._sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        req = struct.pack("IIII", block, blocks, size, self.slots)
        self._sock.setsockopt(SOL_PACKET, PACKET_TX_RING, req)
        self._mm = mmap.mmap(
            self._sock.fileno(), block * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self.slot_size = size
        ring = np.frombuffer(self._mm, dtype=np.uint8).reshape(self.slots, size)
        self._ring = ring
        self._status = ring[:, 0:4].view(np.uint32)[:, 0]
        self._len = ring[:, 4:8].view(np.uint32)[:, 0]
        self._head = 0

    @property
    def ring(self) -> bool:
        return self._mm is not None

    def send_frames(self, frames: FrameRows) -> int:
        if self._mm is None:
            return self._send_each(frames)
        if isinstance(frames, np.ndarray):
            return self._ring_array(frames)
        errors = 0
        for f in frames:  # frames of different lengths: one row array each
            errors += self._ring_array(np.frombuffer(f, dtype=np.uint8)[None, :])
        return errors

    def _gone(self, e: OSError) -> None:
        """Raise when the interface no longer exists: no later send can succeed."""
        self.last_error = e
        if e.errno in _GONE:
            raise TransportError(f"network interface {self.iface!r} went away") from None

    def _send_each(self, frames: FrameRows) -> int:
        errors = 0
        send = self._sock.send
        for f in rows_of(frames):
            try:
                send(f)
            except OSError as e:
                self._gone(e)
                errors += 1
        return errors

    def _ring_array(self, frames: np.ndarray[Any, np.dtype[np.uint8]]) -> int:
        rows, length = frames.shape
        if length > self.slot_size - SLOT_DATA:
            raise TransportError(f"a {length}-byte frame does not fit a TX ring slot")
        errors = 0
        done = 0
        while done < rows:
            h = self._head
            n = min(rows - done, self.slots - h)
            if self._status[h : h + n].any():
                errors += self._flush(h, n)
            self._ring[h : h + n, SLOT_DATA : SLOT_DATA + length] = frames[done : done + n]
            self._len[h : h + n] = length
            self._status[h : h + n] = TP_STATUS_SEND_REQUEST
            errors += self._flush(h, n)
            self._head = (h + n) % self.slots
            done += n
        return errors

    def _flush(self, h: int, n: int) -> int:
        """Have the kernel send every requested slot; the errors among slots [h, h+n)."""
        status = self._status[h : h + n]
        errors = 0
        for attempt in range(100):
            try:
                self._sock.send(b"")
            except OSError as e:
                self._gone(e)
                if e.errno not in (errno.ENOBUFS, errno.EAGAIN, errno.EINTR):
                    # The interface is gone or down: nothing pending will go out.
                    pending = status != TP_STATUS_AVAILABLE
                    errors += int(np.count_nonzero(pending))
                    status[pending] = TP_STATUS_AVAILABLE
                    return errors
            bad = status == TP_STATUS_WRONG_FORMAT
            if bad.any():
                errors += int(np.count_nonzero(bad))
                status[bad] = TP_STATUS_AVAILABLE
            if not status.any():
                return errors
            time.sleep(0.0001 * min(attempt + 1, 10))
        pending = status != TP_STATUS_AVAILABLE
        errors += int(np.count_nonzero(pending))
        status[pending] = TP_STATUS_AVAILABLE
        return errors

    def close(self) -> None:
        if self._mm is not None:
            del self._ring, self._status, self._len
            try:
                self._mm.close()
            except BufferError:
                pass  # a view still lives (in an exception's traceback): unmapped when it goes
            self._mm = None
        self._sock.close()
