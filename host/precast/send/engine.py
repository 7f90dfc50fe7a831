"""Send readings from the host: the `send` command, rate control, progress and the summary.

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
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from precast.errors import UsageError
from precast.send.transports import FrameRows, Transport, open_transport
from precast.wire.layout import Layout

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
    """Send every chunk of frames through transport at `rate` frames/s (0: at once)."""
    stats = Stats(start=time.monotonic())
    bucket = TokenBucket(rate) if rate > 0 else None
    try:
        for chunk in chunks:
            n = len(chunk)
            i = 0
            while i < n:
                k = bucket.take(n - i) if bucket else n - i
                stats.errors += transport.send_frames(chunk[i : i + k])
                stats.sent += k
                i += k
                if progress:
                    progress.update(stats.sent, time.monotonic() - stats.start)
    except KeyboardInterrupt:
        stats.notes.append("interrupted")
    finally:
        stats.end = time.monotonic()
        if progress:
            progress.close()
    return stats


def reading_batches(
    layout: Layout,
    device: int,
    seq: int,
    raws: list[int | float],
    count: int,
    batch: int,
    key: bytes | None = None,
) -> Iterator[FrameRows]:
    """Frames of one device's readings with fixed values, seq counting up (count 0: forever)."""
    import numpy as np

    from precast.send.batch import BatchPatcher

    bp = BatchPatcher(layout, key)
    buf = bp.empty(batch)
    steps = np.arange(batch, dtype=np.uint64)
    done = 0
    while count == 0 or done < count:
        n = batch if count == 0 else min(batch, count - done)
        seqs = ((steps[:n] + (seq + done)) & 0xFFFFFFFF).astype(np.uint32)
        out = buf[:n]
        bp.patch(out, device, seqs, raws)
        yield out
        done += n


# ---- transports from the command line ------------------------------------------------------


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

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def print_summary(transport: Transport, stats: Stats, extra: Iterable[str] = ()) -> None:
    print(transport.description)
    for line in [*stats.notes, *extra]:
        print(line)
    print(stats.summary(), flush=True)


# ---- the send command ----------------------------------------------------------------------


def rate_arg(text: str) -> float:
    try:
        r = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not r >= 0 or r == float("inf"):
        raise argparse.ArgumentTypeError(f"rate must be 0 (as fast as possible) or positive: {r}")
    return r


def count_arg(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"count must be 0 (until interrupted) or more: {n}")
    return n


def cmd_send(args: argparse.Namespace) -> int:
    from precast.args import parse_assignments
    from precast.wire.codec import raw_values
    from precast.wire.layout import pick_layout

    lay = pick_layout([args.template], args.which)
    if lay.template.mic and args.key is None:
        raise UsageError(
            f"template {lay.template.name!r} uses {lay.template.check}: "
            "give the device's key with --key HEX"
        )
    raws = raw_values(lay, parse_assignments(args.values))
    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    stop_on_sigterm()
    transport = transport_from_args(args, lay.frame_len)
    try:
        batches = reading_batches(
            lay, args.device, args.seq, raws, args.count, args.batch, args.key
        )
        progress = Progress(
            args.count or None,
            f"{lay.template.name} device {args.device}",
            enabled=not args.no_progress,
        )
        stats = pump(transport, batches, args.rate, args.count or None, progress)
    finally:
        transport.close()
    note = getattr(transport, "ring_note", "")
    print_summary(transport, stats, [note] if note else [])
    return 130 if "interrupted" in stats.notes else 0


def register(sub: Any) -> None:
    """Add the `send` command."""
    from precast.args import add_template_args, uint32

    s = sub.add_parser(
        "send",
        help="send one device's readings: raw on an interface, over UDP, or to a pcap file",
        description="Send COUNT readings of one device with fixed field values, seq counting "
        "up, at RATE frames/s. The last line of the summary reads "
        "`sent N frames in S s: R frames/s, E errors`.",
    )
    add_template_args(s)
    s.add_argument("--seq", type=uint32, default=0, help="first sequence number (default 0)")
    s.add_argument(
        "--rate",
        type=rate_arg,
        default=0.0,
        help="frames per second; 0 (default) sends as fast as it can",
    )
    s.add_argument(
        "--count",
        type=count_arg,
        default=1,
        help="frames to send (default 1); 0 sends until interrupted",
    )
    s.add_argument("--batch", type=int, default=1024, help="frames patched and sent per batch")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_transport_args(s)
    s.add_argument("values", nargs="*", metavar="NAME=VALUE", help="field values in units")
    s.set_defaults(func=cmd_send, intermixed="values")
