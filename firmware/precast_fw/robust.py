"""Retry with backoff around a transport: a failed send is counted, never the end of the loop.

A send can fail for a while and then work again: ESP32's WiFi buffers are
full (ENOMEM, EAGAIN), the kernel's queue is (ENOBUFS), no route, link
down. Robust.send retries with a doubling backoff, then gives the reading
up (counted as dropped). A closed or broken socket (EBADF, ENOTCONN, or
retries used up) is reopened when the transport can. Robust allocates
nothing on the way through a failure, except to reopen (the port builds
the OSError; under heap_lock it uses its emergency exception object).
"""

import errno
import time

import micropython

_CLOSED = (errno.EBADF, errno.ENOTCONN)


class Robust:
    """A transport wrapper with the same send(mv); sent/failed/dropped/reopened count outcomes."""

    def __init__(self, transport, retries=3, backoff_ms=2, max_backoff_ms=1000):
        self.transport = transport
        self.retries = retries
        self.backoff_ms = backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.sent = 0
        self.failed = 0  # send attempts that raised
        self.dropped = 0  # readings given up after every retry
        self.reopened = 0
        self.last_errno = 0
        self.heap_locked = False  # app sets this while the loop runs under heap_lock
        self.FRAME = getattr(transport, "FRAME", True)
        self._reopen = getattr(transport, "reopen", None)

    def send(self, mv):
        """Send mv; True when it went out, False when it was dropped after the retries."""
        wait = self.backoff_ms
        tries = 0
        while True:
            try:
                self.transport.send(mv)
                self.sent += 1
                return True
            except OSError as e:
                err = e.errno
            except MemoryError:  # under heap_lock a port may fail to build the OSError itself
                err = errno.ENOMEM
            self.failed += 1
            self.last_errno = err
            tries += 1
            if err in _CLOSED or tries > self.retries:
                self.reopen()
            if tries > self.retries:
                self.dropped += 1
                return False
            time.sleep_ms(wait)
            wait = min(wait * 2, self.max_backoff_ms)

    def reopen(self):
        """Reopen the transport; a new socket needs the heap, so lift heap_lock meanwhile."""
        if self._reopen is None:
            return
        locked = self.heap_locked
        if locked:
            micropython.heap_unlock()
        try:
            self._reopen()
            self.reopened += 1
        except OSError as e:
            self.last_errno = e.errno
        finally:
            if locked:
                micropython.heap_lock()

    def close(self):
        self.transport.close()
