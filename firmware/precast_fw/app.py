"""The main loop: read -> patch -> send -> pace, with counts at the end.

`main(tpl, cfg)` is what main.py calls with the generated template module
and the config module. The loop's parts, in order:

1. board setup (network, watchdog, seq store)  -> board.setup()
2. the transport, picked by name, opened
   through the link (robust)                   -> open_link()
3. the sensor, picked by name                  -> open_sensor()
4. the first seq                               -> Board.first_seq()
5. one warm-up reading, then heap_lock if asked
6. loop: sensor.read, sender.patch, send; with an interval, board.pace() first
7. counts, printed as one line (also after
   Ctrl-C)                                     -> counts.Counts

The loop is as lean as its core: at --interval-ms 0 it runs in bursts of
readings (as many as the seq store has reserved, at most BURST) with the
watchdog fed and the seqs claimed once per burst, and it calls the
transport's own send (for udp, the socket's) inside a try: a failed send,
and only that, goes to Robust.recover for the retries, backoff and
reopening. A transport that cannot be opened (no network, no route, no
chip) is not the end either: its opening is retried the same way, counted,
at every reading until it works.

Config names used here (precast_config): TRANSPORT, SENSOR, KEY,
INTERVAL_MS, COUNT, HEAP_LOCK, RETRIES, BACKOFF_MS, TELL_MS (how often the
console is told of a failure that lasts; a minute by default), BACKLOG
(readings kept when a send fails and sent late: backlog.py; 0 or absent:
none).
"""

import errno
import time

import micropython
from micropython import const

from .board import setup
from .robust import TELL_MS, Robust
from .sender import Sender

_DEFAULT_INTERVAL_MS = const(1000)  # a sender is rate-capped by default (RFC 8085)
_BURST = const(1000)  # readings between two claims at --interval-ms 0
_ROLL = const(1 << 28)  # the readings count rolls over into `rolls` (small ints on any port)


def _module(path):
    """The firmware module at `path` ("transport_udp", "sensors.sim"), imported."""
    mod = __import__("precast_fw." + path)
    for part in path.split("."):
        mod = getattr(mod, part)
    return mod


def open_link(name, tpl, cfg, transport=None, board=None):
    """A Robust around the transport; it opens the named one itself, and retries that too."""
    retries = getattr(cfg, "RETRIES", 3)
    backoff = getattr(cfg, "BACKOFF_MS", 2)
    feed = None if board is None or board.wdt is None else board.wdt.feed  # bound once
    prepare = None if board is None else board.reconnect
    tell = getattr(cfg, "TELL_MS", TELL_MS)
    if transport is not None:
        return Robust(transport, retries, backoff, feed=feed, prepare=prepare, tell_ms=tell)
    cls = _module("transport_" + name).Transport  # udp, packet, serial, w5500, enc28j60, mem
    return Robust(None, retries, backoff, feed=feed, opener=lambda: cls(tpl, cfg),
                  frame=getattr(cls, "FRAME", True), prepare=prepare, tell_ms=tell)  # fmt: skip


def open_sensor(name, tpl, cfg):
    """The sensor driver named `name`: precast_fw.sensors.<name>; "a,b" reads a then b."""
    if "," in name:
        from .sensors.group import Group

        return Group([open_sensor(n, tpl, cfg) for n in name.split(",")])
    return _module("sensors." + name).Sensor(tpl, cfg)


class Loop:
    """The loop's parts, bound once (a method lookup per call costs ~30 ns on a PC).

    `n` + `rolls` * 2**28 readings made so far: counted once per burst, kept
    small so that under heap_lock the count never becomes a big int.
    """

    def __init__(self, board, link, sensor, sender, values, interval, keeper=None):
        self.link = link
        self.keeper = keeper
        self.send = link.send if keeper is None else keeper.send  # bound once
        self.read = sensor.read
        self.patch = sender.patch
        self.pace = board.pace  # bound here: binding a method allocates, under heap_lock too
        self.claim = board.claim
        self.mv = sender.frame_mv if link.FRAME else sender.payload_mv
        self.values = values
        self.interval = interval
        self.deadline = time.ticks_add(time.ticks_ms(), interval)
        self.n = 0
        self.rolls = 0

    def go_small(self, count):
        """`count` (below 2**30) more readings (0: until stopped)."""
        claim = self.claim
        left = count
        while count == 0 or left > 0:
            want = _BURST if count == 0 or left > _BURST else left
            if self.interval:
                k = self.paced(want)
            else:
                k = self.burst(claim(want))
            if count:
                left -= k
            if self.n >= _ROLL:
                self.n -= _ROLL
                self.rolls += 1

    def burst(self, k):
        """k readings back to back, the seqs claimed already; k."""
        if self.keeper is not None:
            return self.kept_burst(k)
        read = self.read
        patch = self.patch
        link = self.link
        send = link.send_raw
        mv = self.mv
        values = self.values
        i = 0
        try:
            while i < k:
                read(values)
                patch(values)
                i += 1  # counted once its seq is taken: a Ctrl-C inside send() ends after it
                try:
                    send(mv)
                except OSError as e:
                    link.recover(mv, e.errno)
                    send = link.send_raw  # reopened: a new socket's send
                except MemoryError:  # under heap_lock a port may fail to build the OSError
                    link.recover(mv, errno.ENOMEM)
                    send = link.send_raw
        finally:
            self.n += i  # counted however the burst ended (Ctrl-C included)
        return k

    def kept_burst(self, k):
        """burst's readings through the keeper's send (kept ones first, a failed one kept)."""
        read = self.read
        patch = self.patch
        send = self.send
        mv = self.mv
        values = self.values
        i = 0
        try:
            while i < k:
                read(values)
                patch(values)
                i += 1  # counted once its seq is taken (see burst)
                send(mv)
        finally:
            self.n += i
        return k

    def paced(self, k):
        """k readings, each after board.pace() to the deadline, claimed one by one; k."""
        pace_to = self.pace
        claim = self.claim
        read = self.read
        patch = self.patch
        send = self.send
        mv = self.mv
        values = self.values
        interval = self.interval
        i = 0
        try:
            while i < k:
                self.deadline = pace_to(self.deadline, interval)  # in cfg.SLEEP's way
                claim(1)
                read(values)
                patch(values)
                i += 1  # counted once its seq is taken (see burst)
                send(mv)
        finally:
            self.n += i
        return k


def run(tpl, cfg, transport=None, sensor=None):
    """Send cfg.COUNT readings (0: forever, or until Ctrl-C); the Counts."""
    # The board, up: WiFi, watchdog, seq store (deepsleep's, which only a bundle built
    # --sleep deep carries, saves what crosses each sleep).
    deep = getattr(cfg, "SLEEP", "none") == "deep"
    if deep:
        from .deepsleep import Board as Deep

        board = setup(cfg, Deep)
    else:
        board = setup(cfg)
    link = open_link(getattr(cfg, "TRANSPORT", "udp"), tpl, cfg, transport, board)
    loop = None
    lock = getattr(cfg, "HEAP_LOCK", False)
    locked = False
    sender = None
    keeper = None
    try:
        if sensor is None:
            sensor = open_sensor(getattr(cfg, "SENSOR", "sim"), tpl, cfg)
        sender = Sender(tpl, getattr(cfg, "KEY", None))
        backlog = getattr(cfg, "BACKLOG", 0)
        if backlog:
            from .backlog import open_keeper

            keeper = open_keeper(backlog, link, sender, getattr(cfg, "KEY", None))
            if deep:  # before first_seq: the ring comes back from the RTC memory the seq
                board.keep_over_sleep(keeper.backlog)  # store then reads and clears
        sender.seq = board.first_seq(getattr(cfg, "SEQ_START", 0))  # the store's, if any
        count = getattr(cfg, "COUNT", 0)
        interval = getattr(cfg, "INTERVAL_MS", _DEFAULT_INTERVAL_MS)
        loop = Loop(board, link, sensor, sender, sender.values, interval, keeper)
        # Warm-up: the first reading outside the lock (first calls may allocate caches).
        board.claim(1)
        loop.read(loop.values)
        loop.patch(loop.values)
        loop.send(loop.mv)
        loop.n = 1
        loop.deadline = time.ticks_add(time.ticks_ms(), interval)
        if count != 1:
            # The rest as rounds * 2**28 + rest readings (none: until stopped), split before
            # the lock: a count past 2**30 is a big int on a 32-bit port, and the loop works
            # on small ints only.
            rounds = (count - 1) // _ROLL if count else 0
            rest = (count - 1) % _ROLL if count else 0
            if lock:
                micropython.heap_lock()
                link.heap_locked = locked = True
            while not count:
                loop.go_small(0)
            while rounds:
                loop.go_small(_ROLL)
                rounds -= 1
            if rest:
                loop.go_small(rest)
    except KeyboardInterrupt:  # Ctrl-C: stop as --count does, with the counts line
        pass
    finally:
        if locked:
            link.heap_locked = False
            micropython.heap_unlock()
        link.close()
        board.close(None if sender is None else sender.seq)
    from .counts import Counts  # the run is over: loaded now, never held by the loop

    return Counts(0 if loop is None else loop.rolls * _ROLL + loop.n, link, keeper)


def main(tpl, cfg):
    """Run and print the counts; the exit status (0)."""
    counts = run(tpl, cfg)
    print(counts)
    if counts.backlog is not None:  # what the ring kept, sent late, dropped, still holds
        print("precast: backlog " + counts.backlog)
    if counts.detail is not None:  # the transport's own account (w5500, enc28j60)
        print(counts.detail())
    return 0
