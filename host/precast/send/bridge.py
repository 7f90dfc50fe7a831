"""The serial bridge: payloads from a board without a network, forwarded as frames.

The board writes each payload SLIP-framed (RFC 1055, slip.py) to its UART;
the bridge reads the line with pyserial (a device path, or any pyserial
URL such as loop://), checks each payload with the codec, and sends the
good ones on: raw on an interface as the template's whole frame (UDP
checksum completed from the template's partial sum, RFC 1624), or from a
UDP socket as the payload alone. Corrupt SLIP frames and refused payloads
are counted, never forwarded, and never stop the bridge.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from precast.args import examples
from precast.send.engine import Stats
from precast.send.transports import Transport
from precast.wire.checks import ones_sum, udp_final
from precast.wire.codec import Codec, Rejected
from precast.wire.constants import PAYLOAD_OFFSET, UDP_CSUM_OFFSET, VARIABLE_FROM
from precast.wire.layout import Layout
from precast.wire.slip import Decoder
from precast.wire.template import default_templates

READ_TIMEOUT = 0.05  # seconds a read waits, so stop conditions are seen


@dataclass
class BridgeStats(Stats):
    """A run's frames sent plus what came over the line: SLIP frames, corrupt, refused."""

    frames: int = 0
    corrupt: int = 0
    refused: Counter[str] = field(default_factory=Counter)

    def line_summary(self) -> str:
        refused = ", ".join(f"{k} {v}" for k, v in sorted(self.refused.items())) or "none"
        return f"serial: {self.frames} SLIP frames, {self.corrupt} corrupt; refused: {refused}"


def frame_for(layout: Layout, payload: bytes) -> bytearray:
    """The template's whole frame around a payload, its UDP checksum completed."""
    frame = bytearray(layout.frame)
    frame[PAYLOAD_OFFSET:] = payload
    s = layout.udp_partial + ones_sum(payload[VARIABLE_FROM:])
    frame[UDP_CSUM_OFFSET : UDP_CSUM_OFFSET + 2] = udp_final(s).to_bytes(2, "big")
    return frame


class Bridge:
    """Reads SLIP frames from a serial port, checks them, and forwards the good ones."""

    def __init__(self, port: Any, codec: Codec, transport: Transport) -> None:
        self.port = port
        self.codec = codec
        self.transport = transport
        self.slip = Decoder()
        self.stats = BridgeStats()

    def handle(self, data: bytes) -> None:
        """Decode, check and forward everything `data` completes."""
        out = []
        for payload in self.slip.feed(data):
            r = self.codec.decode(payload)
            if isinstance(r, Rejected):
                self.stats.refused[r.reason] += 1
            else:
                out.append(frame_for(r.layout, payload))
        self.stats.frames = self.slip.frames
        self.stats.corrupt = self.slip.corrupt
        if out:
            self.stats.errors += self.transport.send_frames(out)
            self.stats.sent += len(out)

    def run(
        self, count: int = 0, idle: float = 0.0, ready: Callable[[], None] | None = None
    ) -> BridgeStats:
        """Bridge until `count` SLIP frames (0: no limit), `idle` quiet seconds, or Ctrl-C.

        `ready` is called once the loop can take a Ctrl-C (or SIGTERM) as a clean stop."""
        st = self.stats
        st.start = last = time.monotonic()
        try:
            if ready is not None:
                ready()
            while not count or st.frames < count:
                data = self.port.read(max(1, self.port.in_waiting))
                now = time.monotonic()
                if data:
                    last = now
                    self.handle(data)
                elif idle and now - last >= idle:
                    break
        except KeyboardInterrupt:
            st.notes.append("interrupted")
        except OSError as e:  # pyserial's SerialException too: the port went away
            st.notes.append(f"serial port closed: {e}")
        st.end = time.monotonic()
        return st


def cmd_bridge(args: argparse.Namespace) -> int:
    from precast.send.engine import print_summary, stop_on_sigterm, transport_from_args
    from precast.serialport import open_serial
    from precast.wire.layout import load_layouts

    layouts = load_layouts(args.templates or default_templates())
    codec = Codec(layouts, key=args.key)
    port = open_serial(args.serial, baudrate=args.baud, timeout=READ_TIMEOUT)
    stop_on_sigterm()
    transport = transport_from_args(args, max(lay.frame_len for lay in layouts))

    def ready() -> None:
        # The port is open (pyserial's open empties its input), frames can go, and a signal
        # from now on is a clean stop.
        print(
            f"precast bridge: reading {args.serial} at {args.baud} baud",
            file=sys.stderr,
            flush=True,
        )

    try:
        stats = Bridge(port, codec, transport).run(args.count, args.idle, ready)
    finally:
        transport.close()
        port.close()
    print_summary(
        transport, stats, [f"from {args.serial} at {args.baud} baud", stats.line_summary()]
    )
    return 0


def register(sub: Any) -> None:
    """Add the `bridge` command."""
    from precast.args import key_arg
    from precast.send.engine import add_transport_args

    b = sub.add_parser(
        "bridge",
        help="forward SLIP-framed payloads from a serial port as frames",
        description="Read payloads a board writes SLIP-framed (RFC 1055) to its UART, check each "
        "with its template, and forward the good ones; corrupt SLIP frames and refused payloads "
        "are counted. The last line of the summary reads "
        "`sent N frames in S s: R frames/s, E errors`.",
        epilog=examples(
            "precast bridge --serial /dev/ttyUSB0 --templates templates --udp 127.0.0.1:20547",
            "precast bridge --serial /dev/ttyACM0 --baud 115200 --templates templates --iface eth0",
        ),
    )
    b.add_argument(
        "--serial",
        required=True,
        metavar="PORT",
        help="serial device or pyserial URL (loop://, rfc2217://...), or mpremote's auto, a0, "
        "u0, c0",
    )
    b.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    b.add_argument(
        "--templates",
        nargs="+",
        action="extend",
        metavar="PATH",
        help="template files or directories (default: ./templates, else the examples "
        "shipped with precast)",
    )
    b.add_argument("--key", type=key_arg, help="AES-128 key, 32 hex digits (cmac templates)")
    b.add_argument(
        "--count",
        type=int,
        default=0,
        metavar="N",
        help="stop after N SLIP frames (default: no limit)",
    )
    b.add_argument(
        "--idle",
        type=float,
        default=0.0,
        metavar="S",
        help="stop after S seconds without data (default: never)",
    )
    add_transport_args(b)
    b.set_defaults(func=cmd_bridge)
