"""Retry with backoff around a transport: a failed send is counted, never the end of the loop.

A send can fail for a while and then work again: ESP32's WiFi buffers are
full (ENOMEM, EAGAIN), the kernel's queue is (ENOBUFS), no route, link
down, no network yet. After a failed send, Robust.recover retries with a
doubling backoff (backoff_ms, 2x, 4x, ... up to max_backoff_ms), then
gives the reading up (counted as dropped). A closed or broken socket
(EBADF, ENOTCONN, or retries used up) is reopened when the transport can.

A transport that could not be opened at all (its constructor raised
OSError: no route to the collector at start, no chip on the bus) is the
same case: Robust keeps the opener, and every reading tries it again
through the same retries and backoff, counted, until it works. So the
first connect is no different from any later send.

What went wrong is said on the console, with the driver's own words where
it gave any (an OSError's second argument: "w5500: VERSIONR reads 0x00,
not 0x04: no chip, or a wiring fault ..."), else the errno's name: once
when a cause (errno and words) first happens, and again at most once per
`tell_ms` (a minute) while it lasts; a send that fails only because the
last (re)open failed (ENOTCONN, EBADF) is that open's consequence, not a
cause of its own. The line is printed from the parts held (nothing is
formatted), so telling allocates nothing, under heap_lock too; the last
cause's words stay in `last_error` for the summary.

`send_raw` is what the loop calls per reading: the transport's own send
(for udp and packet the socket's bound send, no Python frame in between),
or while nothing is open one that raises ENOTCONN. Robust allocates
nothing on the way through a failure, except to reopen (the port builds
the OSError; under heap_lock it uses its emergency exception object).
"""

import errno
import time

import micropython

_CLOSED = (errno.EBADF, errno.ENOTCONN)
# The collector's host refused the datagram before this send (ICMP port unreachable): this
# one never left, and a retry would go out into nothing. Not retried; that datagram counted.
REFUSED = errno.ECONNREFUSED
_NOT_OPEN = OSError(errno.ENOTCONN)  # made once: raising it allocates nothing
_NAMES = getattr(errno, "errorcode", {})  # errno -> "ENOBUFS", where the port has the table
TELL_MS = 60000  # the same cause on the console at most once a minute


def words(e):
    """The text an OSError carries beside its errno (a driver's message), or None."""
    a = e.args
    return a[1] if len(a) > 1 and isinstance(a[1], str) else None


def _not_open(mv):
    raise _NOT_OPEN


class Robust:
    """A transport wrapper with the same send(mv); failed/dropped/reopened count outcomes.

    `transport` is an open transport, or None with `opener` (a function that
    makes and opens one, raising OSError when it cannot) and `frame` (the
    transport class's FRAME). `feed` (or None) is called before each backoff
    wait: the watchdog must not bite a board that is waiting for its network;
    `prepare` (or None) before each (re)open: Board.reconnect rejoins the WiFi.
    """

    def __init__(self, transport, retries=3, backoff_ms=2, max_backoff_ms=1000, feed=None,
                 opener=None, frame=None, prepare=None, tell_ms=TELL_MS):  # fmt: skip
        self.retries = retries
        self.backoff_ms = backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.feed = feed
        self.failed = 0  # send attempts that raised (opening attempts included)
        self.dropped = 0  # readings given up after every retry (or at once when refused)
        self.refused = 0  # datagrams sent and then refused by the collector's host (lost)
        self.reopened = 0
        self.last_errno = 0
        self.last_error = None  # last_errno's words: the driver's, or the errno's name
        self.tell_ms = tell_ms
        self.heap_locked = False  # app sets this while the loop runs under heap_lock
        self.opener = opener
        self.prepare = prepare  # called before each (re)open: the board rejoins its WiFi
        self.transport = None
        self.send_raw = _not_open
        self._reopen = None
        self._told = 0  # the cause the console was last told about: errno, words, when
        self._told_words = None
        self._told_ms = time.ticks_ms()
        self._broken = False  # the last (re)open failed: ENOTCONN until one works
        self.FRAME = frame
        if transport is not None:
            self._use(transport)
        elif opener is not None:
            self._open()

    def _use(self, transport):
        self.transport = transport
        self.send_raw = transport.send  # udp/packet: the socket's own send, bound in reopen()
        self._reopen = getattr(transport, "reopen", None)
        if self.FRAME is None:
            self.FRAME = getattr(transport, "FRAME", True)

    def _open(self):
        try:
            self._use(self.opener())
            self._broken = False
            return True
        except OSError as e:
            self.fault(e.errno, words(e), True)
            return False

    def fault(self, err, said=None, opening=False):
        """Note a failure (errno err, the driver's words if any); tell the console if it is new."""
        if said is None:  # keep the words a driver gave for this errno (w5500: no link ...)
            said = self.last_error if err == self.last_errno else _NAMES.get(err, "")
        self.last_errno = err
        self.last_error = said
        if opening:
            self._broken = True
        elif self._broken and err in _CLOSED:
            return  # nothing is open because the open failed: that open was the cause
        now = time.ticks_ms()
        if err == self._told and said == self._told_words:
            if time.ticks_diff(now, self._told_ms) < self.tell_ms:
                return
        self._told = err
        self._told_words = said
        self._told_ms = now
        what = "cannot open the transport yet" if opening else "send failed"
        print("precast: ", what, " (errno ", err, "): ", said, "; retrying", sep="")

    def send(self, mv):
        """Send mv; True when it went out, False when it was dropped after the retries."""
        try:
            self.send_raw(mv)
        except OSError as e:
            return self.recover(mv, e.errno)
        except MemoryError:  # under heap_lock a port may fail to build the OSError itself
            return self.recover(mv, errno.ENOMEM)
        return True

    def recover(self, mv, err):
        """After a send of mv failed with errno err: retry with backoff; True once it went out."""
        wait = self.backoff_ms
        tries = 0
        while True:
            self.failed += 1
            self.fault(err)
            if err == REFUSED:
                self.refused += 1
                self.dropped += 1
                return False
            tries += 1
            if err in _CLOSED or tries > self.retries:
                self.reopen()
            if tries > self.retries:
                self.dropped += 1
                return False
            if self.feed is not None:
                self.feed()
            time.sleep_ms(wait)
            wait = min(wait * 2, self.max_backoff_ms)
            try:
                self.send_raw(mv)
                return True
            except OSError as e:
                err = e.errno
            except MemoryError:
                err = errno.ENOMEM

    def reopen(self):
        """Reopen the transport (or open it the first time); a socket needs the heap, so
        heap_lock is lifted meanwhile."""
        t = self.transport
        if t is None and self.opener is None:
            return
        if t is not None and self._reopen is None:
            return  # this transport cannot reopen: it goes on as it is
        locked = self.heap_locked
        if locked:
            micropython.heap_unlock()
        try:
            if self.prepare is not None:
                self.prepare()
            if t is None:
                if self._open():
                    self.reopened += 1
            else:
                try:
                    self._reopen()
                    self.send_raw = t.send
                    self.reopened += 1
                    self._broken = False
                except OSError as e:
                    self.fault(e.errno, words(e), True)
        finally:
            if locked:
                micropython.heap_lock()

    def close(self):
        if self.transport is not None:
            self.transport.close()
