"""Board set-up and the pause between readings: WiFi, the watchdog, sleep, the seq store.

WiFi (ESP32, Pico W) comes up from `precast_secrets.py` through wifi.py,
which only a port with a network module loads: the unix port has none,
the host's network is already up. The buses and pins drivers ask for are
buses.py's.

The watchdog (machine.WDT) resets a board whose loop stops; it is fed
before every reading and during long pauses, and is None where the port
has no WDT (the unix port). Between readings the board waits in one of
three ways (cfg.SLEEP): "none" (time.sleep_ms, the radio stays up),
"light" (machine.lightsleep: CPU and radio stop, RAM is kept; WiFi is
rejoined on waking if the access point dropped the station) or "deep"
(machine.deepsleep: the board powers down and boots again into main.py;
deepsleep.Board, which only a bundle built --sleep deep carries, saves
what crosses the reboot first).
"""

import time

import machine
import micropython
from micropython import const

_DEFAULT_WDT_MS = const(30000)
# The longest a single sleep may last with a watchdog running: rp2's WDT stops at 8388 ms.
_MAX_WDT_MS = const(8000)


def wifi_up(timeout_ms=None, wdt=None):
    """Connect to the secrets' WiFi (True when up, or when the port has no WiFi): wifi.py."""
    try:
        import network
    except ImportError:  # the unix port: the host's own network is up
        return True
    from .wifi import up  # only a port with WiFi loads it

    try:
        return up(network, timeout_ms, wdt)
    finally:
        # Needed at start-up and rarely after (again only to rejoin): its code leaves RAM
        # until then (1.4 KB on a 32-bit port), and a rejoin, with the heap unlocked,
        # imports it again.
        import sys

        pkg = __name__.rpartition(".")[0]
        sys.modules.pop(pkg + ".wifi", None)
        if "wifi" in sys.modules[pkg].__dict__:
            delattr(sys.modules[pkg], "wifi")


def watchdog(timeout_ms=_DEFAULT_WDT_MS):
    """A started machine.WDT, or None where the port has none (0 turns it off)."""
    if not timeout_ms:
        return None
    try:
        return machine.WDT(timeout=timeout_ms)
    except AttributeError:  # no WDT on this port (unix)
        return None
    except ValueError:  # longer than the port's watchdog can count (rp2: 8388 ms)
        return machine.WDT(timeout=_MAX_WDT_MS)


# Looked up once: under heap_lock a failed lookup could not even build its AttributeError.
try:
    _lightsleep = machine.lightsleep
except AttributeError:  # the unix port has none: an ordinary wait stands in
    _lightsleep = None


class Board:
    """What app's loop asks of the board: first_seq(), claim() per reading, pace() between."""

    def __init__(self, cfg, store=None, wdt=None):
        self.sleep_mode = ("none", "light", "deep").index(getattr(cfg, "SLEEP", "none"))
        self.heap_lock = getattr(cfg, "HEAP_LOCK", False)
        self.wlan = None  # the WiFi station: only a socket transport needs the network
        if getattr(cfg, "WIFI", getattr(cfg, "TRANSPORT", "udp") == "udp"):
            try:
                import network

                self.wlan = network.WLAN(network.STA_IF)
            except ImportError:  # the unix port: the host keeps its own network up
                pass
        if store is None and getattr(cfg, "SEQ_FILE", None):
            store = self.seq_store(cfg)
        self.store = store
        self.wdt = wdt
        self._slice = _MAX_WDT_MS if wdt is not None else 0
        self.network_tries = 0  # WiFi connections tried after the first (reconnect)

    def seq_store(self, cfg):
        """The seq store cfg asks for (seqstore.py: a bundle without a seq file lacks it)."""
        from .seqstore import DEFAULT_RESERVE, SeqStore

        return SeqStore(cfg.SEQ_FILE, getattr(cfg, "SEQ_RESERVE", DEFAULT_RESERVE),
                        getattr(cfg, "SEQ_WRITE_MS", 0))  # fmt: skip

    def first_seq(self, default=0):
        """The seq of this boot's first reading: from the store, else `default`."""
        if self.store is None:
            return default
        return self.store.start()

    def claim(self, n):
        """Before the next n sends: feed the watchdog, claim their seqs; how many may go (>= 1).

        Fewer than n when the store's reservation ends sooner: the loop claims again then.
        """
        if self.wdt is not None:
            self.wdt.feed()
        if self.store is not None:
            return self.store.claim(n)
        return n

    def pause(self, ms):
        """Wait ms in the configured sleep mode (none or light), feeding the watchdog."""
        # A watchdog must be fed more often than it bites: sleep in slices it allows.
        step = self._slice
        light = self.sleep_mode == 1 and _lightsleep is not None
        while ms > 0:
            n = ms if not step or ms < step else step
            if light:
                _lightsleep(n)
            else:
                time.sleep_ms(n)  # "none", and light sleep's stand-in on the unix port
            ms -= n
            if self.wdt is not None:
                self.wdt.feed()
        if self.sleep_mode == 1 and self.wlan is not None and not self.wlan.isconnected():
            # The access point may have dropped the station: rejoin (rare, not per reading).
            self._unlocked(Board.reconnect, self)

    def pace(self, deadline, interval_ms):
        """Pause until `deadline` (ticks_ms); the next deadline. Never bursts to catch up."""
        now = time.ticks_ms()
        wait = time.ticks_diff(deadline, now)
        if wait > 0:
            self.pause(wait)
            return time.ticks_add(deadline, interval_ms)
        return time.ticks_add(now, interval_ms)

    def reconnect(self):
        """Before the transport is (re)opened: join the WiFi again if it is down (counted).

        Robust calls it with the heap unlocked; a port without WiFi has nothing to do.
        """
        if self.wlan is not None and not self.wlan.isconnected():
            self.network_tries += 1
            wifi_up(wdt=self.wdt)

    def _unlocked(self, fn, arg):
        # fn(arg) needs the heap (a WiFi rejoin, a file before a deep sleep): rare, not per
        # reading, so under heap_lock the lock is lifted meanwhile.
        if self.heap_lock:
            micropython.heap_unlock()
        try:
            fn(arg)
        finally:
            if self.heap_lock:
                micropython.heap_lock()

    def close(self, next_seq=None):
        """A clean stop (count reached, Ctrl-C): keep the exact seq (next_seq: the sender's)."""
        if self.store is not None:
            if next_seq is not None:
                self.store.release(next_seq)  # a burst claims ahead: give back what it left
            self.store.save_exact()
            self.store.close()


def setup(cfg, kind=None):
    """Bring the board up (WiFi, watchdog) and return its Board for the loop (WiFi or not):
    a `kind` (a Board, or deepsleep's) made with cfg, its seq store and the watchdog."""
    wdt = watchdog(getattr(cfg, "WATCHDOG_MS", 0))
    board = (kind or Board)(cfg, wdt=wdt)
    if board.wlan is not None and not wifi_up(wdt=wdt):
        # Not the end: the loop runs, its sends fail (counted), and every reopen of the
        # transport tries the WiFi again first (Board.reconnect), until it is up.
        print("precast: no network yet; the loop keeps trying")
    return board
