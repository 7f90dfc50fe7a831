"""`precast device reset`: an operator resets one device's books in a collector's database.

For a device whose counter was lost (a MIC device whose seq store was wiped
counts from 0 again, and every frame would be a replay), or one whose books a
far jump moved. The command writes a request to the database's requests
table; the collector (running, or at its next start) applies it within a
second and logs it: the device's next two consecutive readings start a new epoch, its
counters stay. Until then nothing changes.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from precast.args import examples, uint32
from precast.collect.store import open_reader

WAIT = 3.0  # s the command waits to see a running collector apply the request


def cmd_device_reset(args: argparse.Namespace) -> int:
    reader = open_reader(args.db)
    try:
        req = reader.request_reset(args.device)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if not reader.request_pending(req):
                print(
                    f"device {args.device}: books reset by the collector; its next two "
                    "consecutive readings start a new epoch"
                )
                return 0
            time.sleep(0.1)
    finally:
        reader.close()
    print(
        f"device {args.device}: reset requested; no collector applied it within {WAIT:g} s, "
        "so the collector applies it when it starts"
    )
    return 0


def register(sub: Any) -> None:
    """Add the `device` command (`device reset`)."""
    d = sub.add_parser(
        "device",
        help="operator actions on one device's books",
        description="Operator actions on one device's books in a collector's database.",
        epilog=examples("precast device reset --db precast.db 7"),
    )
    dsub = d.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = dsub.add_parser(
        "reset",
        help="reset a device's sequence books (a running collector applies it)",
        description="Reset one device's sequence books so that a device whose counter was "
        "lost (a MIC device whose seq store was wiped) is admitted again: its next two "
        "consecutive readings start a new epoch; its counters stay. A running collector "
        "applies it within a "
        "second and logs it.",
        epilog=examples(
            "precast device reset --db /var/lib/precast/precast.db 7",
            "precast device reset --db postgresql://precast@db.example/precast 7",
        ),
    )
    r.add_argument(
        "--db",
        default="precast.db",
        metavar="PATH|URL",
        help="SQLite database path or postgresql:// URL (default precast.db)",
    )
    r.add_argument("device", type=uint32, metavar="N", help="the device id")
    r.set_defaults(func=cmd_device_reset)
