"""Simulated sensor fleets: the `simulate` command, for testing a collector before hardware.

A fleet is K devices with distinct device ids (--device-base on), MACs
(02:00 then the device id's four bytes) and source IPs (the first
template's plus the device's index), given the templates round-robin. Each reading
is a sine per field, a period of a minute with a phase per device, plus a
little noise, inside what a real sensor reports for the field's unit
(wire/units.py), else in the middle of its type's range. Devices report in rounds (one
reading each); the fleet's rate is frames per second over all devices.

Faults, on demand, each with its own probability per reading; a reading
gets at most one:
- loss: the frame is not sent (a gap in the device's seq);
- dup: the frame is sent twice in a row;
- reorder: the frame is held back and sent after the device's next one;
- corrupt: one bit of the payload from the device id to the check is
  flipped and the UDP checksum fixed, so it reaches the receiver's check.
A device's first and last readings, and the reading after a reordered one,
are sent clean, so every fault is visible: a collector counts lost = loss + corrupt,
duplicates = dup, late = reorder, and bad checks = corrupt.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from precast.args import examples
from precast.errors import UsageError
from precast.send.batch import BatchPatcher
from precast.send.outage import Backlogs, add_outage_args, check_outage, frame_room
from precast.wire.checks import fold, ones_sum, udp_final
from precast.wire.constants import OFF_DEVICE, PAYLOAD_OFFSET, UDP_CSUM_OFFSET, VARIABLE_FROM
from precast.wire.layout import Layout, compile_template
from precast.wire.template import default_templates
from precast.wire.units import plausible_raw

PERIOD = 60.0  # seconds, of every simulated signal


@dataclass
class Faults:
    """Probabilities of each fault per reading, and how many of each were injected."""

    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0

    @property
    def any(self) -> bool:
        return self.loss + self.dup + self.reorder + self.corrupt > 0

    def summary(self) -> str:
        return (
            f"faults: lost {self.lost}, duplicated {self.duplicated}, reordered"
            f" {self.reordered}, corrupted {self.corrupted}"
        )


@dataclass
class Group:
    """The devices of one template: their ids, frames and UDP partial sums, side by side."""

    layout: Layout
    patcher: BatchPatcher
    ids: npt.NDArray[np.uint32]
    frames: npt.NDArray[np.uint8]  # one compiled frame per device
    partials: npt.NDArray[np.uint32]
    phases: npt.NDArray[np.float64]
    layouts: list[Layout] = field(default_factory=list)


def _device_mac(device: int) -> str:
    return "02:00:" + ":".join(f"{b:02x}" for b in device.to_bytes(4, "big"))


class Fleet:
    """K devices over some templates, making their readings a round at a time."""

    def __init__(
        self,
        layouts: list[Layout],
        devices: int,
        device_base: int = 1,
        key: bytes | None = None,
        seed: int = 0,
    ) -> None:
        if devices < 1:
            raise UsageError("a fleet needs at least one device (--devices K)")
        if device_base + devices - 1 > 0xFFFFFFFF:
            raise UsageError("device ids would pass 4294967295: lower --device-base")
        self.rng = np.random.default_rng(seed)
        self.devices = devices
        members: dict[int, list[Layout]] = {}
        ids: dict[int, list[int]] = {}
        first_ip = ipaddress.IPv4Address(layouts[0].template.network.src_ip)
        for i in range(devices):
            t = layouts[i % len(layouts)].template
            ip = first_ip + i
            net = dataclasses.replace(
                t.network, src_mac=_device_mac(device_base + i), src_ip=str(ip)
            )
            members.setdefault(t.id, []).append(
                compile_template(dataclasses.replace(t, network=net))
            )
            ids.setdefault(t.id, []).append(device_base + i)
        self.groups: list[Group] = []
        for tid, lays in members.items():
            first = lays[0]
            self.groups.append(
                Group(
                    layout=first,
                    patcher=BatchPatcher(first, key),
                    ids=np.array(ids[tid], dtype=np.uint32),
                    frames=np.array([np.frombuffer(lay.frame, np.uint8) for lay in lays]),
                    partials=np.array([fold(lay.udp_partial) for lay in lays], dtype=np.uint32),
                    phases=self.rng.uniform(0, 2 * math.pi, len(lays)),
                    layouts=lays,
                )
            )

    def describe(self) -> str:
        parts = ", ".join(f"{g.layout.template.name} x{len(g.ids)}" for g in self.groups)
        return f"fleet: {self.devices} devices ({parts})"

    def signals(self, g: Group, t: npt.NDArray[np.float64]) -> list[npt.NDArray[Any]]:
        """Raw values per field for readings at times t (rows: rounds, columns: devices)."""
        out: list[npt.NDArray[Any]] = []
        wave = np.sin(2 * math.pi * t[:, None] / PERIOD + g.phases[None, :])
        for s in g.layout.fields:
            mid, amp = plausible_raw(s)  # a real sensor's values where the unit says what
            noise = self.rng.normal(0.0, 0.02, wave.shape)
            x = np.clip(mid + amp * 0.95 * (wave + noise), mid - amp, mid + amp)
            if s.field.type == "f32":
                out.append(x.astype(np.float32).reshape(-1))
                continue
            lo, hi = s.field.range
            raw = np.clip(np.rint(x), lo, hi)
            out.append(raw.astype(np.int64).reshape(-1))
        return out

    def rounds(
        self, first: int, count: int, interval: float, seq0: int = 0
    ) -> Iterator[tuple[Group, npt.NDArray[np.uint8]]]:
        """Each group's frames for rounds [first, first+count), round-major, device order."""
        r = np.arange(first, first + count)
        t = (r * interval).astype(np.float64)
        for g in self.groups:
            k = len(g.ids)
            out = np.tile(g.frames, (count, 1))
            seqs = ((r[:, None] + seq0) & 0xFFFFFFFF).astype(np.uint32).repeat(k, axis=1)
            g.patcher.patch(
                out,
                np.tile(g.ids, count),
                seqs.reshape(-1),
                self.signals(g, t),
                np.tile(g.partials, count),
            )
            yield g, out


class FaultInjector:
    """Applies Faults to each device's stream of frames, keeping what reorder holds back."""

    def __init__(self, faults: Faults, rng: np.random.Generator) -> None:
        self.f = faults
        self.rng = rng
        self.held: dict[int, bytes] = {}
        self.clean_next: set[int] = set()

    def apply(
        self, g: Group, frames: npt.NDArray[np.uint8], first: bool, last: bool
    ) -> list[bytes]:
        """The frames to send for these rows; `first`/`last`: they hold the first/last round."""
        f = self.f
        k = len(g.ids)
        u = self.rng.random(len(frames))
        c1, c2, c3 = f.loss, f.loss + f.dup, f.loss + f.dup + f.reorder
        c4 = c3 + f.corrupt
        out: list[bytes] = []
        n = len(frames)
        for i in range(n):
            d = i % k
            dev = int(g.ids[d])
            frame = frames[i].tobytes()
            x = u[i]
            clean = (first and i < k) or (last and i >= n - k) or dev in self.clean_next
            self.clean_next.discard(dev)
            if clean or x >= c4:
                out.append(frame)
            elif x < c1:
                f.lost += 1
            elif x < c2:
                out.append(frame)
                out.append(frame)
                f.duplicated += 1
            elif x < c3:
                self.held[dev] = frame
                self.clean_next.add(dev)
                f.reordered += 1
                continue  # nothing to release: this one is now held
            else:
                out.append(self._corrupt(g, d, frame))
                f.corrupted += 1
            held = self.held.pop(dev, None)
            if held is not None:
                out.append(held)
        return out

    def _corrupt(self, g: Group, d: int, frame: bytes) -> bytes:
        lay = g.layouts[d]
        b = bytearray(frame)
        p = PAYLOAD_OFFSET
        span = lay.check_offset + lay.check_len - OFF_DEVICE
        bit = int(self.rng.integers(span * 8))
        b[p + OFF_DEVICE + bit // 8] ^= 0x80 >> (bit % 8)
        s = lay.udp_partial + ones_sum(b[p + VARIABLE_FROM :])
        struct.pack_into(">H", b, UDP_CSUM_OFFSET, udp_final(s))
        return bytes(b)


CHUNK_S = 0.05  # seconds of sending a chunk of frames spans, at most, when paced


def fleet_frames(
    fleet: Fleet,
    faults: Faults,
    rounds: int | None,
    interval: float,
    batch: int,
    deadline: float | None = None,
) -> Iterator[Any]:
    """Chunks of frames for `rounds` rounds (None: until the deadline on time.monotonic())."""
    per_chunk = max(1, batch // fleet.devices)
    inject = FaultInjector(faults, fleet.rng) if faults.any else None
    done = 0
    while rounds is None or done < rounds:
        if deadline is not None and time.monotonic() >= deadline:
            return
        n = per_chunk if rounds is None else min(per_chunk, rounds - done)
        last = rounds is not None and done + n == rounds
        for g, frames in fleet.rounds(done, n, interval):
            yield inject.apply(g, frames, done == 0, last) if inject else frames
        done += n


def _probability(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability is 0..1, got {p}")
    return p


def cmd_simulate(args: argparse.Namespace) -> int:
    import sys

    from precast.send.engine import (
        Progress,
        exit_status,
        print_summary,
        pump,
        stop_on_sigterm,
        transport_from_args,
    )
    from precast.wire.layout import load_layouts

    faults = Faults(args.loss, args.dup, args.reorder, args.corrupt)
    if faults.loss + faults.dup + faults.reorder + faults.corrupt > 1:
        raise UsageError("--loss, --dup, --reorder and --corrupt add up to more than 1")
    layouts = load_layouts(args.templates or default_templates())
    if args.key is None:
        keyed = [lay.template.name for lay in layouts if lay.template.mic]
        layouts = [lay for lay in layouts if not lay.template.mic]
        if keyed:
            print(f"precast: leaving out {', '.join(keyed)}: no --key for its MIC", file=sys.stderr)
        if not layouts:
            raise UsageError("every template needs a key: give --key HEX")
    if args.duration <= 0:
        raise UsageError("--duration must be positive")
    seed = args.seed if args.seed is not None else int(np.random.default_rng().integers(2**31))
    fleet = Fleet(layouts, args.devices, args.device_base, args.key, seed)
    interval = args.devices / args.rate if args.rate > 0 else 0.001
    rounds = max(1, round(args.rate * args.duration / args.devices)) if args.rate > 0 else None
    deadline = None if rounds else time.monotonic() + args.duration
    # A chunk sends each template group's rounds in turn: at a paced rate keep a chunk to
    # CHUNK_S of sending, so each device's readings spread out as a real device's do
    # instead of coming in bursts with long silences (which a collector reports as stale).
    batch = args.batch
    if args.rate > 0:
        batch = max(args.devices, min(batch, int(args.rate * CHUNK_S)))
    check_outage(args)
    stop_on_sigterm()
    transport = transport_from_args(args, frame_room(max(lay.frame_len for lay in layouts), args))
    backlogs = None
    try:
        chunks: Iterator[Any] = fleet_frames(fleet, faults, rounds, interval, batch, deadline)
        if args.outage is not None:
            backlogs = Backlogs(args.outage, args.backlog, 1 / args.rate, layouts, args.key)
            chunks = backlogs.frames(chunks)
        total = rounds * args.devices if rounds else None
        progress = Progress(total, f"{args.devices} devices", enabled=not args.no_progress)
        # With an outage the backlog paces the readings itself (outage.py): no second pacer.
        rate = 0.0 if backlogs is not None else args.rate
        stats = pump(transport, chunks, rate, total, progress)
    finally:
        transport.close()
    extra = [f"{fleet.describe()}, seed {seed}", faults.summary()]
    if backlogs is not None:
        extra.append(backlogs.counts.summary(backlogs.waiting()))
    print_summary(transport, stats, extra)
    return exit_status(stats)


def register(sub: Any) -> None:
    """Add the `simulate` command."""
    from precast.args import key_arg, rate_arg, uint32
    from precast.send.engine import add_transport_args

    s = sub.add_parser(
        "simulate",
        help="simulate a fleet of devices, with faults on demand",
        description="K devices with distinct ids, MACs and IPs send simulated readings at RATE "
        "frames/s in all for DURATION seconds, with loss, duplication, reordering and "
        "corruption on demand. The summary counts the faults injected; its last line reads "
        "`sent N frames in S s: R frames/s, E errors`.",
        epilog=examples(
            "precast simulate --templates templates --devices 50 --rate 500 --duration 10 "
            "--udp 127.0.0.1:20547",
            "precast simulate --templates templates/env-node.toml --devices 5 --rate 100 "
            "--loss 0.02 --dup 0.01 --pcap faults.pcap",
        ),
    )
    s.add_argument(
        "--templates",
        nargs="+",
        action="extend",
        metavar="PATH",
        help="template files or directories (default: ./templates, else the examples "
        "shipped with precast)",
    )
    s.add_argument("--devices", type=int, required=True, metavar="K", help="fleet size")
    s.add_argument("--device-base", type=uint32, default=1, help="first device id (default 1)")
    s.add_argument(
        "--rate",
        type=rate_arg,
        required=True,
        help="frames per second over the whole fleet; 0: as fast as it can",
    )
    s.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    faults = (
        ("loss", "not sent"),
        ("dup", "sent twice"),
        ("reorder", "sent after the next"),
        ("corrupt", "one bit flipped"),
    )
    for name, what in faults:
        s.add_argument(
            f"--{name}",
            type=_probability,
            default=0.0,
            metavar="P",
            help=f"probability a reading is {what}",
        )
    s.add_argument("--seed", type=int, help="random seed (printed in the summary)")
    s.add_argument("--key", type=key_arg, help="AES-128 key of every device (cmac templates)")
    s.add_argument("--batch", type=int, default=1024, help="frames made per batch")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_outage_args(s)
    add_transport_args(s)
    s.set_defaults(func=cmd_simulate)
