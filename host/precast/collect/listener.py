"""The collector's receiving thread: the socket into the queue, never the disk.

It waits for the socket, then drains it until EAGAIN (receiver.py: recvmmsg(2)
into arrays) and queues the datagrams as one batch stamped with one arrival
time, then sleeps 2 ms so the next batch gathers. It never touches the disk,
so a slow commit never stops it: when the queue is full the batch is dropped
and counted there (backlog.py); the kernel's own drops on the socket are read
from /proc/net/udp once a second. Stopping, it takes what the socket holds
(`last_drain`) and closes it at once.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time

from precast.collect.backlog import Backlog
from precast.collect.receiver import bind_udp, kernel_drops, receiver_for, seal

log = logging.getLogger("precast.collect")

BATCH_MAX = 4096  # datagrams per drain, so the queue sees a long burst in pieces
DRAINS = 16  # drains at most between two pauses (a flood still lets the others run)
COALESCE = 0.002  # s the thread sleeps after a drain (about a third less CPU)


class Listener:
    """A bound UDP socket and the loop that queues what it receives."""

    def __init__(
        self, listen: tuple[str, int], rcvbuf: int, reuse_port: bool, backlog: Backlog, cap: int
    ) -> None:
        self.sock = bind_udp(listen, rcvbuf, reuse_port)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.receiver = receiver_for(self.sock)
        self.receiver.cap = cap  # bytes of a datagram worth keeping
        self.reuse_port = reuse_port
        self.backlog = backlog
        self.kernel_drops = 0  # of this socket, as the kernel counts them
        self.stopping = threading.Event()
        self._reported_drops = 0

    def run(self) -> None:
        """Receive until stop(), then take the socket's last contents and close it."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        next_check = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 1.0
                self.check_drops()
            if not poller.poll(200):
                continue
            try:
                self._drain()
            except OSError as e:  # nothing a UDP receive should raise, but never stop for it
                log.error("receiving: %s", e)
            # Let datagrams gather for a moment. Waking for every few of them makes this thread
            # fight the storing one for the GIL, which sqlite3 releases and takes back per row.
            time.sleep(COALESCE)
        self._last_drain()

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        self.sock.close()

    def _drain(self) -> None:
        """Read until EAGAIN, or DRAINS full batches; queue them."""
        read, backlog = self.receiver.read, self.backlog
        for _ in range(DRAINS):
            batch = read(BATCH_MAX)
            if batch:
                backlog.put((time.time(), batch))
            if len(batch) < BATCH_MAX:
                return

    def _last_drain(self) -> None:
        """Stopping: take everything the socket holds into the backlog, then close it.

        What the socket holds was received: it goes to the backlog past its bounds (the
        socket's buffer bounds it; a sender still going is cut off at what the buffer holds),
        to be stored, or spilled and counted if the database will not take it. Then the
        socket is closed at once, not when storing is done, so a slow database here costs
        the others nothing.

        First the socket is connected to itself (`seal`): a connected UDP socket takes only
        its peer's datagrams, so from then on the kernel gives every source to the rest of a
        --reuse-port group, and the socket's queue is a closed set that the reads empty.
        Closing at once instead loses what arrives between the last read and the close,
        uncounted (under load, dozens of readings a stop).
        """
        read = self.receiver.read
        taken = 0
        seal(self.sock)
        try:
            # At least 768 bytes of buffer a datagram (the kernel's truesize of a small one).
            most = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 768 + BATCH_MAX
            while taken < most:
                batch = read(BATCH_MAX)
                if batch:
                    self.backlog.put((time.time(), batch), force=True)
                    taken += len(batch)
                if len(batch) < BATCH_MAX:
                    break
        except OSError as e:
            log.error("receiving: %s", e)
        self.check_drops()
        self.sock.close()
        log.info(
            "stopping: %d datagrams taken from the socket, which is closed%s; storing them",
            taken,
            " (the other collectors on the port take its sources now)" if self.reuse_port else "",
        )

    def check_drops(self) -> None:
        """Read the kernel's drop count; log a warning when any drop count grew."""
        kd = kernel_drops(self.sock)
        if kd is not None:
            self.kernel_drops = kd
        drops = self.kernel_drops + self.backlog.dropped
        if drops > self._reported_drops:
            log.warning(
                "dropped datagrams: %d by the kernel (receive buffer full), "
                "%d by the queue (storing too slow)",
                self.kernel_drops,
                self.backlog.dropped,
            )
            self._reported_drops = drops
