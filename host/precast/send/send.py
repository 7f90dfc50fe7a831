"""`precast send`: one device's readings with fixed field values, seq counting up.

Frames are made in batches (batch.BatchPatcher) and handed to the engine
(engine.py), which paces them and prints the summary whose last line is a
contract: `sent N frames in S s: R frames/s, E errors`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from precast.args import add_template_args, count_arg, examples, parse_assignments, rate_arg, uint32
from precast.errors import UsageError
from precast.send.engine import (
    Progress,
    add_transport_args,
    exit_status,
    print_summary,
    pump,
    stop_on_sigterm,
    transport_from_args,
)
from precast.send.outage import Backlogs, add_outage_args, check_outage, frame_room
from precast.send.transports import FrameRows
from precast.wire.codec import raw_values
from precast.wire.layout import Layout, pick_layout


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


def cmd_send(args: argparse.Namespace) -> int:
    lay = pick_layout([args.template], args.which)
    if lay.template.mic and args.key is None:
        raise UsageError(
            f"template {lay.template.name!r} uses {lay.template.check}: "
            "give the device's key with --key HEX"
        )
    raws = raw_values(lay, parse_assignments(args.values))
    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    check_outage(args)
    stop_on_sigterm()
    transport = transport_from_args(args, frame_room(lay.frame_len, args))
    backlogs = None
    try:
        batches: Iterator[FrameRows] = reading_batches(
            lay, args.device, args.seq, raws, args.count, args.batch, args.key
        )
        if args.outage is not None:
            backlogs = Backlogs(args.outage, args.backlog, 1 / args.rate, [lay], args.key)
            batches = backlogs.frames(batches)
        progress = Progress(
            args.count or None,
            f"{lay.template.name} device {args.device}",
            enabled=not args.no_progress,
        )
        # With an outage the backlog paces the readings itself (outage.py): no second pacer.
        rate = 0.0 if backlogs is not None else args.rate
        stats = pump(transport, batches, rate, args.count or None, progress)
    finally:
        transport.close()
    note = getattr(transport, "ring_note", "")
    extra = [note] if note else []
    if backlogs is not None:
        extra.append(backlogs.counts.summary(backlogs.waiting()))
    print_summary(transport, stats, extra)
    return exit_status(stats)


def register(sub: Any) -> None:
    """Add the `send` command."""
    s = sub.add_parser(
        "send",
        help="send one device's readings: raw on an interface, over UDP, or to a pcap file",
        description="Send COUNT readings of one device with fixed field values, seq counting "
        "up, at RATE frames/s. The last line of the summary reads "
        "`sent N frames in S s: R frames/s, E errors`.",
        epilog=examples(
            "precast send templates/env-node.toml --device 7 --udp 127.0.0.1:20547 --count 100 "
            "--rate 10 temperature=21.5 humidity=40 pressure=101325 battery=3300",
            "precast send templates/minimal.toml --device 1 --pcap minimal.pcap --count 10 value=5",
            "precast send templates/minimal.toml --device 1 --udp 127.0.0.1:20547 --count 50 "
            "--rate 10 --outage 1:2 value=5",
        ),
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
    add_outage_args(s)
    add_transport_args(s)
    s.add_argument("values", nargs="*", metavar="NAME=VALUE", help="field values in units")
    s.set_defaults(func=cmd_send, intermixed="values")
