"""The main loop: read -> patch -> send -> pace, with counts at the end.

`main(tpl, cfg)` is what main.py calls with the generated template module
and the config module. The loop's parts, in order:

1. board setup (network, watchdog)             -> setup_board()
2. the transport, picked by name               -> open_transport()
3. the sensor, picked by name                  -> open_sensor()
4. the first seq                               -> first_seq()
5. one warm-up reading, then heap_lock if asked
6. loop: sensor.read, sender.patch, link.send, then pace() to the rate cap
7. counts, printed as one line

Config names used here (precast_config): TRANSPORT, SENSOR, KEY,
INTERVAL_MS, COUNT, HEAP_LOCK, RETRIES, BACKOFF_MS.
"""

import time

import micropython

from .robust import Robust
from .sender import Sender

DEFAULT_INTERVAL_MS = 1000  # a sender is rate-capped by default (RFC 8085)


def _module(package, name):
    mod = __import__(package + "." + name)
    for part in (package + "." + name).split(".")[1:]:
        mod = getattr(mod, part)
    return mod


def open_transport(name, tpl, cfg):
    """The transport named `name` (udp, packet, serial, mem): precast_fw.transport_<name>."""
    return _module("precast_fw", "transport_" + name).Transport(tpl, cfg)


def open_sensor(name, tpl, cfg):
    """The sensor driver named `name`: precast_fw.sensors.<name>; "a,b" reads a then b."""
    if "," in name:
        from .sensors.group import Group

        return Group([open_sensor(n, tpl, cfg) for n in name.split(",")])
    return _module("precast_fw.sensors", name).Sensor(tpl, cfg)


def setup_board(cfg):
    """Bring the board up (WiFi, watchdog, seq store, sleep mode): a board.Board."""
    from .board import setup

    return setup(cfg)


def first_seq(cfg):
    """The seq of the first reading."""
    return getattr(cfg, "SEQ_START", 0)


def pace(deadline, interval_ms):
    """Sleep until `deadline` (ticks_ms); the next deadline. Never bursts to catch up."""
    now = time.ticks_ms()
    wait = time.ticks_diff(deadline, now)
    if wait > 0:
        time.sleep_ms(wait)
        return time.ticks_add(deadline, interval_ms)
    return time.ticks_add(now, interval_ms)


class Counts:
    """What a run did: readings made, and the link's sent/failed/dropped/reopened."""

    def __init__(self, readings, link):
        self.readings = readings
        self.sent = link.sent
        self.failed = link.failed
        self.dropped = link.dropped
        self.reopened = link.reopened
        self.last_errno = link.last_errno
        self.detail = getattr(link.transport, "summary", None)

    def __str__(self):
        return "precast: readings %d sent %d failed %d dropped %d reopened %d last_errno %d" % (
            self.readings,
            self.sent,
            self.failed,
            self.dropped,
            self.reopened,
            self.last_errno,
        )


def run(tpl, cfg, transport=None, sensor=None):
    """Send cfg.COUNT readings (0: forever); the Counts."""
    board = setup_board(cfg)
    if transport is None:
        transport = open_transport(getattr(cfg, "TRANSPORT", "udp"), tpl, cfg)
    if sensor is None:
        sensor = open_sensor(getattr(cfg, "SENSOR", "sim"), tpl, cfg)
    link = Robust(transport, getattr(cfg, "RETRIES", 3), getattr(cfg, "BACKOFF_MS", 2))
    sender = Sender(tpl, getattr(cfg, "KEY", None))
    sender.seq = board.first_seq(first_seq(cfg))  # the seq store's, when it has one
    mv = sender.frame_mv if link.FRAME else sender.payload_mv
    values = [0] * tpl.FIELD_COUNT
    count = getattr(cfg, "COUNT", 0)
    interval = getattr(cfg, "INTERVAL_MS", DEFAULT_INTERVAL_MS)
    lock = getattr(cfg, "HEAP_LOCK", False)

    # Bound once, outside the loop: a method lookup per call costs ~30 ns on a PC.
    read = sensor.read
    patch = sender.patch
    tick = board.tick
    send = link.send
    # Warm-up: the first reading outside the lock (first calls may allocate caches).
    read(values)
    patch(values)
    tick()  # feeds the watchdog, claims the seq from the store
    send(mv)
    n = 1
    deadline = time.ticks_add(time.ticks_ms(), interval)
    if lock:
        micropython.heap_lock()
        link.heap_locked = True
    try:
        while count == 0 or n < count:
            if interval:
                deadline = board.pace(deadline, interval)  # in cfg.SLEEP's way
            read(values)
            patch(values)
            tick()
            send(mv)
            n += 1
    finally:
        if lock:
            link.heap_locked = False
            micropython.heap_unlock()
        link.close()
        board.close()
    return Counts(n, link)


def main(tpl, cfg):
    """Run and print the counts; the exit status (0)."""
    counts = run(tpl, cfg)
    print(counts)
    if counts.detail is not None:  # the transport's own account (w5500, enc28j60)
        print(counts.detail())
    return 0
