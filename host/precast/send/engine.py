"""The host's send engine: rate control, the pump, progress, transport options, the summary.

Shared by `send` (send.py), `simulate` (fleet.py) and `bridge` (bridge.py).

Frames are made in batches (batch.BatchPatcher) and handed to a transport
(transports/): raw on an interface through a TX ring, a UDP socket, or a
pcap file. A token bucket paces them: tokens accrue at the target rate, a
batch goes out as soon as its tokens are there, and the process sleeps in
between (no busy wait), waking about once a millisecond. The bucket holds
at most 0.1 s of tokens, so a stall of the machine is caught up, but never
more. `--rate 0` sends as fast as the transport takes frames.

Every run ends with a summary on stdout whose last line is a contract:

    sent N frames in S s: R frames/s, E errors
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from precast.errors import UsageError
from precast.send.transports import FrameRows, Transport, open_transport

# Runs longer than this get a progress bar (on a terminal).
PROGRESS_AFTER = 1.0
TICK = 0.001  # the pacer wakes about this often


class TokenBucket:
    """Tokens accrue at `rate` per second up to `burst`; a frame takes one."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise UsageError(f"a token bucket needs a positive rate, got {rate}")
        self.rate = rate
        self.quantum = max(1, int(rate * TICK))
        self.burst = max(2.0 * self.quantum, rate * 0.1) if burst is None else burst
        self.tokens = 1.0
        self._clock = clock
        self._sleep = sleep
        self._t = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._t) * self.rate)
        self._t = now

    def take(self, want: int) -> int:
        """Sleep until a quantum of tokens (or `want`, if fewer) is there; take up to `want`."""
        least = min(want, self.quantum)
        while True:
            self._refill()
            have = self.tokens + 1e-6  # float sums fall a hair short of whole tokens
            if have >= least:
                n = min(want, int(have))
                self.tokens -= n
                return n
            self._sleep(max((least - self.tokens) / self.rate, 1e-5))


@dataclass
class Stats:
    """What a run did: frames sent, frames the transport refused, and when."""

    sent: int = 0
    errors: int = 0
    start: float = 0.0
    end: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return max(self.end - self.start, 0.0)

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        """The contract line: `sent N frames in S s: R frames/s, E errors`."""
        return (
            f"sent {self.sent} frames in {self.elapsed:.3f} s: {self.rate:.0f} frames/s,"
            f" {self.errors} errors"
        )


class Progress:
    """A rich progress bar on stderr, shown once a run has lasted PROGRESS_AFTER seconds."""

    def __init__(self, total: int | None, label: str, enabled: bool) -> None:
        self.total = total
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0

    def update(self, done: int, elapsed: float) -> None:
        if not self.enabled or elapsed < PROGRESS_AFTER or elapsed - self._last < 0.1:
            return
        self._last = elapsed
        if self._bar is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>9.0f} frames/s"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._bar.add_task(self.label, total=self.total, rate=0.0)
            self._bar.start()
        self._bar.update(self._task, completed=done, rate=done / elapsed)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def pump(
    transport: Transport,
    chunks: Iterable[FrameRows],
    rate: float,
    total: int | None = None,
    progress: Progress | None = None,
) -> Stats:
    """Send every chunk of frames through transport at `rate` frames/s (0: at once).

    Ctrl-C (and SIGTERM after stop_on_sigterm) ends the run between two sends, never inside
    one: a batch half sent when the signal came would be missing from the count."""
    stats = Stats(start=time.monotonic())
    bucket = TokenBucket(rate) if rate > 0 else None
    stop = _StopBetweenSends()
    try:
        for chunk in chunks:
            n = len(chunk)
            i = 0
            while i < n and not stop.requested:
                k = bucket.take(n - i) if bucket else n - i
                stop.sending = True
                stats.errors += transport.send_frames(chunk[i : i + k])
                stats.sent += k
                stop.sending = False
                i += k
                if progress:
                    progress.update(stats.sent, time.monotonic() - stats.start)
            if stop.requested:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        stats.notes.append("interrupted")
    finally:
        stop.restore()
        stats.end = time.monotonic()
        if progress:
            progress.close()
    return stats


class _StopBetweenSends:
    """While a pump is inside a send, SIGINT (and a SIGTERM that would raise
    KeyboardInterrupt) only set `requested`, and the pump stops right after that send;
    elsewhere (waiting for tokens) they interrupt at once. Outside the main thread nothing
    changes."""

    def __init__(self) -> None:
        self.requested = False
        self.sending = False
        self._old: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            h = signal.getsignal(sig)
            if sig == signal.SIGINT and h is not signal.default_int_handler:
                continue
            if sig == signal.SIGTERM and getattr(h, "__name__", "") != "_raise_interrupt":
                continue
            try:
                self._old[sig] = signal.signal(sig, self._request)
            except ValueError:  # not the main thread
                pass

    def _request(self, signum: int, frame: FrameType | None) -> None:
        if not self.sending:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)
        self._old.clear()


def add_transport_args(p: argparse.ArgumentParser, pcap: bool = True) -> None:
    """--iface IF | --udp HOST:PORT | --pcap FILE, and --per-frame."""
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--iface", metavar="IF", help="send whole frames on this interface (raw)")
    g.add_argument("--udp", metavar="HOST:PORT", help="send payloads from a UDP socket")
    if pcap:
        g.add_argument("--pcap", metavar="FILE", help="write the frames to a pcap file")
    p.add_argument(
        "--per-frame",
        action="store_true",
        help="with --iface: one send() per frame instead of the TX ring",
    )


def transport_from_args(args: argparse.Namespace, frame_len: int) -> Transport:
    """Open the transport the command line names."""
    if args.iface:
        ring = "off" if args.per_frame else "on"
        return open_transport(f"packet://{args.iface}?ring={ring}", frame_len=frame_len)
    if args.udp:
        return open_transport(f"udp://{args.udp}")
    return open_transport(f"pcap://{args.pcap}")


def stop_on_sigterm() -> None:
    """Make SIGTERM end a run like Ctrl-C does: the summary still prints."""

    def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise_interrupt)


def print_summary(transport: Transport, stats: Stats, extra: Iterable[str] = ()) -> None:
    print(transport.description)
    for line in [*stats.notes, *extra]:
        print(line)
    e = transport.last_error
    if stats.errors and e is not None:
        name = errno.errorcode.get(e.errno or 0, "error")
        print(f"last error: {name} ({e.strerror or e}){_HINTS.get(e.errno or 0, '')}")
    print(stats.summary(), flush=True)


# What a refused send most often means, as mosquitto_pub and ping say it.
_HINTS = {
    errno.ECONNREFUSED: ": nothing is listening at that address and port",
    errno.ENETUNREACH: ": no route to that network",
    errno.EHOSTUNREACH: ": that host does not answer (no route or no ARP reply)",
}


def exit_status(stats: Stats) -> int:
    """A run's exit status: 130 interrupted, 1 when any frame could not be sent, else 0."""
    if "interrupted" in stats.notes:
        return 130
    return 1 if stats.errors else 0
