"""`precast build`: everything a board needs to send one template's readings, in one directory.

The device never parses TOML: the template is compiled here into
`precast_template.py`, a module of constants (the frame with the device
id in it, offsets, field sizes, the struct formats, the partial UDP sum
and the CRC state after the constant header) plus one generated
function, `pack`: the template's struct.pack_into call spelled out (a
`*values` call would allocate a tuple per reading), which the firmware
uses for a template with an f32 field (integer fields go through viper).
`precast_template_late.py` holds the same names for the template's delayed
frame (docs/PROTOCOL.md, Delayed frames: flag bit 1, P + 4 bytes, its own
IPv4 length and checksum, UDP length and partial sum), the age one more u32
field after the template's, so `Sender(precast_template_late)` sends a kept
reading late through the very same hot path. (A second module, not a class:
MicroPython's const() names reach into every class body of their module.)
`precast_config.py` holds the run's options, `main.py` runs
`precast_fw.app`, and `precast_fw/` is the part of the firmware package
this board runs: the loop's modules, the chosen transport and sensors,
and what they import (found in their source), nothing else.

Other commands reuse the option set: `add_build_arguments(parser)` adds the
options and `build_bundle(options)` writes the bundle.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import ipaddress
import math
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

from precast.args import add_template_args, examples, non_negative, split_hostport
from precast.boards import ethernet, hardware
from precast.errors import PrecastError, UsageError
from precast.wire.checks import crc16, fold, ones_sum, parse_key
from precast.wire.constants import AGE_LEN, OFF_DEVICE, OFF_SEQ, PAYLOAD_OFFSET
from precast.wire.layout import Layout, compile_template, pick_layout
from precast.wire.template import Network
from precast.wire.units import plausible_raw


def _firmware_dir() -> Path:
    """firmware/precast_fw: shipped in the package as precast.firmware (pyproject.toml).

    find_spec locates it without running its __init__ (MicroPython code), both in an
    installed wheel and in an editable install of a checkout.
    """
    spec = importlib.util.find_spec("precast.firmware")
    if spec is not None and spec.origin is not None:
        return Path(spec.origin).parent
    return Path(__file__).resolve().parents[2] / "firmware" / "precast_fw"


FIRMWARE_DIR = _firmware_dir()
TRANSPORTS = ["udp", "packet", "serial", *ethernet.ETH_TRANSPORTS]  # precast_fw/transport_<name>.py
DEFAULT_INTERVAL_MS = 1000  # rate cap by default (RFC 8085)
CHECK_KINDS = {"crc16": 0, "cmac4": 1, "cmac8": 1}
# Fields per generated pack_into call: MicroPython passes positional arguments on its stack.
PACK_CHUNK = 16
# The simulated sensor keeps raw values inside a 32-bit port's small ints.
# The firmware sim's bound (its walk, drift and noise stay small ints inside +-2**28, its
# S_BIAS): it takes SIM_LO and SIM_HI as given, so they are kept inside it here.
SIM_LIMIT = 2**28 - 1024
VIPER_MODULES = ("viper.py", "viper_cmac.py")  # native code: compiled for --march only
PLAIN_MODULE = "plain.py"  # the same hot path for a port without viper


def _serial_port(text: str) -> int | str:
    """argparse type for --serial-port: a UART number, or a device path."""
    return int(text) if text.isdigit() else text


def _positive_baud(text: str) -> int:
    """argparse type for --serial-baud."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"not a baud rate: {text!r}")
    return int(text)


# RFC 5737's documentation networks: a template's default dst_ip is one, and no collector is.
DOC_NETS = [ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]


class Collector(NamedTuple):
    """--collector HOST[:PORT]: the address put into the frame, and the name it came from."""

    ip: str
    port: int | None
    name: str


def _collector(text: str) -> Collector:
    """argparse type for --collector HOST[:PORT]: a host name is resolved here, at build time."""
    try:
        host, port = split_hostport(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not host:
        raise argparse.ArgumentTypeError(f"expected HOST[:PORT], got {text!r}")
    try:
        return Collector(str(ipaddress.IPv4Address(host)), port, host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as e:
        msg = getattr(e, "strerror", None) or str(e)
        raise argparse.ArgumentTypeError(
            f"cannot resolve {host!r} to an IPv4 address: {msg}"
        ) from None
    return Collector(str(infos[0][4][0]), port, host)


def is_documentation_address(ip: str) -> bool:
    """True for an address of RFC 5737's documentation networks (192.0.2.1, the default)."""
    return any(ipaddress.IPv4Address(ip) in n for n in DOC_NETS)


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `precast build` (TEMPLATE, --device, --out, ...), for reuse."""
    add_template_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write")
    p.add_argument(
        "--key-file",
        metavar="FILE",
        help="file holding the AES-128 key, 32 hex digits (instead of --key, which every "
        "local user can read in ps)",
    )
    p.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="udp",
        help="udp: a socket sends the payload; packet: AF_PACKET sends the "
        "whole frame on --iface (unix port); serial: SLIP-framed payloads on "
        "--serial-port, for `precast bridge`; w5500 / enc28j60: the whole frame "
        "through that SPI Ethernet chip (no IP stack, no WiFi; see the raw Ethernet options)",
    )
    p.add_argument(
        "--collector",
        type=_collector,
        metavar="HOST[:PORT]",
        help="the collector: an IPv4 address or a host name (resolved now), overriding the "
        "template's dst_ip/dst_port; needed unless the template's dst_ip is a real address",
    )
    p.add_argument("--iface", metavar="IF", help="interface for --transport packet")
    p.add_argument(
        "--serial-port",
        type=_serial_port,
        default=1,
        metavar="UART|PATH",
        help="for --transport serial: a UART id on a board (default 1), or a "
        "tty path on the unix port",
    )
    p.add_argument(
        "--serial-baud",
        type=_positive_baud,
        default=115200,
        metavar="BAUD",
        help="for --transport serial: the baud rate (default 115200)",
    )
    p.add_argument(
        "--interval-ms",
        type=non_negative,
        default=DEFAULT_INTERVAL_MS,
        metavar="MS",
        help=f"at most one reading per MS (0: no rate cap; default {DEFAULT_INTERVAL_MS})",
    )
    p.add_argument(
        "--count",
        type=non_negative,
        default=0,
        metavar="N",
        help="stop after N readings (0, the default: never)",
    )
    p.add_argument(
        "--heap-lock",
        action="store_true",
        help="run the steady-state loop under micropython.heap_lock()",
    )
    p.add_argument(
        "--backlog",
        type=non_negative,
        metavar="N",
        help="readings the node keeps when a send fails and sends late, oldest first, as "
        f"delayed frames (default: as many as fit {BACKLOG_RAM} bytes of RAM; 0: off)",
    )
    p.add_argument("--seed", type=non_negative, default=1, help="seed of the simulated sensor")
    p.add_argument("--mpy", action="store_true", help="precompile the modules with mpy-cross")
    p.add_argument(
        "--march",
        metavar="ARCH",
        help="mpy-cross -march for the viper module with --mpy (x64, xtensawin, "
        "armv6m, ...): the bundle then has no plain.py (the hot path for a port without "
        "viper), and a board of another arch says so at start; without it that module "
        "stays source",
    )
    hardware.add_arguments(p)  # --sensor and its pins, --sleep, --watchdog-ms, --seq-*, --secrets
    ethernet.add_arguments(p)  # --spi and its pins, --cs, --eth-reset, --dst-mac, --src-*


def register(subparsers: Any) -> None:
    """Add `precast build`."""
    p = subparsers.add_parser(
        "build",
        help="write firmware, compiled template and config for a board into a directory",
        description="Write DIR/main.py, DIR/precast_template.py (the compiled template), "
        "DIR/precast_config.py and DIR/precast_fw/. `cd DIR && micropython main.py` runs it.",
        epilog=examples(
            "precast build templates/env-node.toml --device 7 --out build/node7 --collector "
            "192.168.1.10",
            "precast build templates/ --template power-meter --device 9 --key "
            "2b7e151628aed2a6abf7158809cf4f3c --out build/pm9 --collector 192.168.1.10:20547",
            "cd build/node7 && micropython main.py",
        ),
    )
    add_build_arguments(p)
    p.set_defaults(func=cmd_build)


def describe_destination(options: Any, lay: Layout) -> str:
    """One line for stderr: where the bundle's readings go."""
    n = lay.template.network
    coll = _opt(options, "collector")
    named = f" ({coll.name})" if coll is not None and coll.name != coll.ip else ""
    return f"readings go to {n.dst_ip}:{n.dst_port}{named}"


RAW_TRANSPORTS = ("w5500", "enc28j60", "packet")  # the bundle writes every header byte itself


def raw_defaults(options: Any, lay: Layout) -> list[str]:
    """Warnings, a line each, for a raw-Ethernet bundle that uses the addressing the template
    left to its defaults: over UDP the board's stack picks them, here they go out as they are.
    """
    if _opt(options, "transport") not in RAW_TRANSPORTS:
        return []
    n, default = lay.template.network, Network()
    out = []
    if n.src_mac == default.src_mac:
        out.append(
            f"the board's MAC is the template's default {n.src_mac}, the same on every board "
            "built so: give --src-mac (or src_mac in the template's [network])"
        )
    if n.src_ip == default.src_ip:
        out.append(
            f"the board's IPv4 address is the template's default {n.src_ip}, a documentation "
            "address (RFC 5737): give --src-ip (or src_ip in the template's [network])"
        )
    if n.dst_mac.lower() == "ff:ff:ff:ff:ff:ff":
        out.append(
            "readings go to the Ethernet broadcast address: every host on the segment gets "
            "each one; give --dst-mac MAC (the collector's, or its router's) or --dst-mac auto"
        )
    return out


def cmd_build(args: argparse.Namespace) -> int:
    paths = build_bundle(args)
    lay = bundle_layout(args)
    print(f"precast build: {describe_destination(args, lay)}", file=sys.stderr)
    for line in raw_defaults(args, lay):
        print(f"precast build: warning: {line}", file=sys.stderr)
    for path in paths:
        print(path)
    return 0


def _opt(options: Any, name: str, default: Any = None) -> Any:
    return getattr(options, name, default)


def bundle_layout(options: Any) -> Layout:
    """The template's layout, with --collector's destination put into the frame."""
    lay = pick_layout([options.template], _opt(options, "which"))
    coll = _opt(options, "collector")
    over = ethernet.network_overrides(options)  # --dst-mac (auto: asks `ip neigh`), --src-*
    if coll is None and not over:
        return lay
    t = lay.template
    net = dataclasses.replace(t.network, **over)
    if coll is not None:
        net = dataclasses.replace(net, dst_ip=coll.ip, dst_port=coll.port or t.network.dst_port)
    return compile_template(dataclasses.replace(t, network=net))


def _check_destination(options: Any, lay: Layout) -> None:
    """A bundle never silently sends to a documentation address (the template default)."""
    t = lay.template
    sends = _opt(options, "transport", "udp") != "serial"  # the bridge addresses its own
    if sends and _opt(options, "collector") is None and is_documentation_address(t.network.dst_ip):
        raise UsageError(
            f"no collector: {t.source} sends to {t.network.dst_ip}, a documentation "
            "address (RFC 5737); give --collector HOST[:PORT], or set dst_ip in the "
            "template's [network]"
        )


def read_secret_file(path: str, what: str) -> str:
    """The text of a file holding a secret (a key, a WiFi password), its line end stripped;
    one line, naming the file, when it cannot be read or is empty."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise UsageError(f"cannot read the {what} file {path}: {e.strerror}") from None
    text = text.strip("\r\n")
    if not text:
        raise UsageError(f"the {what} file {path} is empty")
    return text


def key_of(options: Any) -> bytes | None:
    """The key of --key or --key-file (its one line of 32 hex digits; a key on the command
    line is every local user's to read in ps), or None."""
    key: bytes | None = _opt(options, "key")
    path = _opt(options, "key_file")
    if path is None:
        return key
    if key is not None:
        raise UsageError("give --key or --key-file, not both")
    try:
        text = read_secret_file(path, "key")
    except UsageError as e:
        raise UsageError(f"--key-file: {e}") from None
    try:
        return parse_key(text.strip())
    except PrecastError as e:
        raise UsageError(f"--key-file {path}: {e}") from None


def _check_options(options: Any, lay: Layout) -> None:
    t = lay.template
    if t.mic and _opt(options, "key") is None:
        raise UsageError(
            f"template {t.name!r} uses {t.check}: a key is needed (--key HEX or --key-file F)"
        )
    if _opt(options, "transport", "udp") == "packet" and not _opt(options, "iface"):
        raise UsageError("--transport packet needs --iface IF")


def template_source(lay: Layout, device: int) -> str:
    """The text of precast_template.py for a layout and a device id.

    Every public name is one the firmware reads (each is a name and an entry in the board's
    RAM); those it never reads are private const(), for the reader, folded away on the board.
    The delayed frame's module (lay.delayed) only goes through a Sender: no addresses, no
    sim ranges.
    """
    t = lay.template
    n = t.network
    frame = bytearray(lay.frame)
    struct.pack_into(">I", frame, PAYLOAD_OFFSET + OFF_DEVICE, device)
    head = bytes(frame[PAYLOAD_OFFSET : PAYLOAD_OFFSET + OFF_SEQ])
    # layout.udp_partial covers payload [0, 4); the device id is fixed too, so add it.
    partial = fold(lay.udp_partial + ones_sum(head[OFF_DEVICE:]))
    integer = all(s.field.type != "f32" for s in lay.fields)
    names = (*(s.name for s in lay.fields), *(("age_ms",) if lay.delayed else ()))
    offsets = (*(s.offset for s in lay.fields), *((lay.age_offset,) if lay.delayed else ()))
    sizes = (*(s.field.size for s in lay.fields), *((AGE_LEN,) if lay.delayed else ()))
    lo, hi = [], []
    for s in lay.fields:  # the firmware sim's raw range: what a real sensor of the unit gives
        mid, amp = plausible_raw(s)
        lo.append(max(-SIM_LIMIT, min(SIM_LIMIT, math.ceil(mid - amp))))
        hi.append(max(lo[-1], min(SIM_LIMIT, math.floor(mid + amp))))
    lines = [
        f'"""Generated by `precast build` from {Path(t.source).name}: do not edit.',
        "",
        f"Template {t.id} {t.name!r}{' (its delayed frame)' if lay.delayed else ''},"
        f" check {t.check}, device {device}:",
        f"{n.src_mac} {n.src_ip}:{n.src_port} -> {n.dst_mac} {n.dst_ip}:{n.dst_port}.",
        '"""',
        "",
        *(("from struct import pack_into", "") if not integer else ()),
        "from micropython import const",
        "",
        "# For the reader: no code on the board reads these three.",
        f"_TEMPLATE_ID = const({t.id})",
        f"_DEVICE = const({device})",
        f"_FRAME_LEN = const({len(frame)})",
        "",
        f"NAME = {t.name!r}",
        f"CHECK = {t.check!r}",
        f"CHECK_KIND = const({CHECK_KINDS[t.check]})  # 0: CRC-16, 1: AES-CMAC",
        f"CHECK_LEN = const({lay.check_len})",
        f"FRAME = {bytes(frame)!r}",
        f"PAYLOAD_LEN = const({lay.payload_len})",
        f"OFF_CHECK = const({lay.check_offset})",
        f"OFF_AGE = const({lay.age_offset})  # a delayed frame's age; the check's offset if live",
        "# One's-complement sum (folded) of the pseudo-header, UDP header and payload [0, 8).",
        f"UDP_PARTIAL = const(0x{partial:04x})",
        "# CRC-16/CCITT-FALSE state after payload [0, 8).",
        f"CRC_INIT = const(0x{crc16(head):04x})",
        # A delayed frame's age is one more u32 field, after the template's.
        f"FIELD_COUNT = const({len(sizes)})",
        f"# Fields: {', '.join(f'{nm} @{at}' for nm, at in zip(names, offsets, strict=True))}",
        f"FIELD_SIZES = {sizes!r}",
        f"INTEGER = {integer!r}  # no f32 field: a reading allocates nothing",
    ]
    if not lay.delayed:
        lines += [
            f"DST_IP = {n.dst_ip!r}",
            f"DST_PORT = const({n.dst_port})",
            f"SIM_LO = {tuple(lo)!r}",
            f"SIM_HI = {tuple(hi)!r}",
        ]
    if not integer:  # only a template with an f32 field packs its fields with struct
        lines += [
            "",
            "",
            "def pack(b, hi, lo, v):",
            '    """Write seq (two 16-bit halves) and the raw values v into frame b."""',
            *_pack_lines(lay, "    "),
        ]
    return "\n".join(lines) + "\n"


def _pack_lines(lay: Layout, indent: str) -> list[str]:
    """The body of pack(b, hi, lo, v): pack_into calls of at most PACK_CHUNK fields each.

    A delayed layout packs the age too, as v[field count]: one more u32 after the fields.
    """
    codes = [s.code for s in lay.fields]
    offsets = [s.offset for s in lay.fields]
    if lay.delayed:
        codes.append("I")
        offsets.append(lay.age_offset)
    lines = []
    for start in range(0, len(codes), PACK_CHUNK):
        chunk = range(start, min(start + PACK_CHUNK, len(codes)))
        vals = ", ".join(f"v[{i}]" for i in chunk)
        fmt = ">" + "".join(codes[i] for i in chunk)
        if start == 0:
            off = PAYLOAD_OFFSET + OFF_SEQ
            fmt, vals = ">HH" + fmt[1:], "hi, lo, " + vals
        else:
            off = PAYLOAD_OFFSET + offsets[start]
        lines.append(f"{indent}pack_into({fmt!r}, b, {off}, {vals})")
    return lines


BACKLOG_RAM = 2048  # bytes the backlog's ring takes by default, at most
BACKLOG_OVERHEAD = 448  # its objects and the GC's rounding: 392 measured on the 64-bit unix port
BACKLOG_MAX = 1024  # readings, whatever fits
BACKLOG_FILE = "precast_backlog"


def backlog_slot_bytes(lay: Layout) -> int:
    """RAM one kept reading takes on the node: seq, time of taking, the fields' bytes."""
    return 8 + lay.template.fields_len  # backlog.py's slot: seq and fields (kept), taken


def backlog_size(options: Any, lay: Layout) -> int:
    """Readings the node's ring keeps: --backlog N, or as many as fit BACKLOG_RAM."""
    n = _opt(options, "backlog")
    if n is None:
        room = BACKLOG_RAM - BACKLOG_OVERHEAD
        return min(BACKLOG_MAX, room // backlog_slot_bytes(lay))
    return int(n)


def config_entries(options: Any, lay: Layout) -> dict[str, Any]:
    """Names and values of precast_config.py (plain literals).

    A name only some builds read is written only there (IFACE for packet, SERIAL_* for
    serial, BACKLOG_FILE for deep sleep): each one is a name and an entry in the board's RAM.
    """
    key = _opt(options, "key")
    transport = _opt(options, "transport", "udp")
    only: dict[str, Any] = {}
    if transport == "packet":
        only["IFACE"] = _opt(options, "iface")
    if transport == "serial":
        only["SERIAL_PORT"] = _opt(options, "serial_port", 1)
        only["SERIAL_BAUD"] = _opt(options, "serial_baud", 115200)
    if _opt(options, "sleep", "none") == "deep":
        # Deep sleep reboots: the kept readings wait in this file meanwhile (flash written
        # once a sleep, only while something is kept).
        only["BACKLOG_FILE"] = BACKLOG_FILE
    return {
        "TRANSPORT": transport,
        **only,
        "SENSOR": _opt(options, "sensor", "sim"),
        "SEED": _opt(options, "seed", 1),
        "INTERVAL_MS": _opt(options, "interval_ms", DEFAULT_INTERVAL_MS),
        "COUNT": _opt(options, "count", 0),
        "HEAP_LOCK": bool(_opt(options, "heap_lock", False)),
        "BACKLOG": backlog_size(options, lay),  # readings kept through an outage; 0: off
        **hardware.config_entries(options, lay),  # SENSOR (its final say), SLEEP, SEQ_FILE, ...
        **ethernet.config_entries(options),  # SPI pins, CS, reset; WIFI off (w5500, enc28j60)
        "KEY": bytes(key) if key is not None else None,
    }


def config_source(entries: dict[str, Any]) -> str:
    """The text of precast_config.py."""
    lines = [
        '"""Generated by `precast build`: this board\'s options. Holds the key: keep it."""',
        "",
    ]
    lines += [f"{name} = {value!r}" for name, value in entries.items()]
    return "\n".join(lines) + "\n"


MAIN_SOURCE = '''"""Run precast's sender with this directory's template and config."""

import sys

import precast_config
import precast_template
from precast_fw import app

sys.exit(app.main(precast_template, precast_config))
'''


def _mpy_cross(src: Path, march: str | None, out: Path) -> None:
    # No line numbers in the bytecode: 7% of a bundle, and of the RAM it takes on the board
    # (a traceback there says "line ?"; the firmware's own failures are said in words).
    # The source name each .mpy carries (for tracebacks) is the module's own name, "app" for
    # precast_fw/app.py: a name the board interns anyway (its attribute on the package), so
    # a module costs one name fewer than with "app.py" there (a traceback: File "app").
    name = src.stem
    cmd = [sys.executable, "-m", "mpy_cross", "-X", "no-source-lines", "-s", name]
    if march:
        cmd.append(f"-march={march}")
    cmd.append(src.name)
    try:
        r = subprocess.run(cmd, cwd=src.parent, capture_output=True, text=True, check=False)
    except OSError as e:
        raise PrecastError(f"mpy-cross: {e}") from None
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise PrecastError(f"mpy-cross {src.name}: {msg[-1] if msg else r.returncode}")
    src.unlink()


def _top_modules(out: Path) -> list[Path]:
    """The generated modules beside main.py (the delayed frame's only with a backlog)."""
    names = ("precast_template.py", "precast_template_late.py", "precast_config.py")
    return [out / n for n in names if (out / n).is_file()]


def _precompile(out: Path, march: str | None) -> list[Path]:
    files = [
        *sorted((out / "precast_fw").rglob("*.py")),
        *_top_modules(out),
    ]
    written = []
    for f in files:
        if f.name in VIPER_MODULES and not march:
            written.append(f)  # native code needs an arch; as source the board compiles it
            continue
        _mpy_cross(f, march, out)
        written.append(f.with_suffix(".mpy"))
    return written


def _imports(path: Path, rel: str) -> set[str]:
    """The package modules (paths under precast_fw/) that a firmware module imports."""
    here = Path(rel).parent
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = here
        for _ in range(node.level - 1):
            base = base.parent
        stem = base.joinpath(*node.module.split(".")) if node.module else base
        names = [stem] if node.module else [stem / a.name for a in node.names]
        for n in names:
            pkg = (n / "__init__.py").as_posix()
            out.add(pkg if (FIRMWARE_DIR / pkg).is_file() else n.as_posix() + ".py")
    return out


class Needs(NamedTuple):
    """What a bundle's firmware must do beyond the loop, from the build's options."""

    mic: bool = False  # a template with a CMAC: cmac.py
    native: bool = False  # viper compiled for the board's arch (--march): no plain.py
    backlog: bool = True  # readings kept through an outage (BACKLOG > 0): backlog.py
    seq_file: bool = True  # the seq kept across resets (SEQ_FILE): seqstore.py
    wifi: bool = True  # the board joins a WiFi (a udp node on ESP32, Pico W): wifi.py
    deep_sleep: bool = False  # --sleep deep: deepsleep.py (the seq and the ring cross it)


def firmware_modules(transport: str, sensors: tuple[str, ...], needs: Needs) -> list[str]:
    """The firmware files a bundle carries (under precast_fw/): the loop, the transport and
    sensors named, and their imports; group.py only for several sensors, and of the rest
    only what `needs` asks for (plain.py, the hot path without viper, unless viper is
    native: a port of that arch always loads it)."""
    skip = set() if len(sensors) > 1 else {"sensors/group.py"}
    for rel, needed in (
        ("cmac.py", needs.mic),
        (PLAIN_MODULE, not needs.native),
        ("backlog.py", needs.backlog),
        ("seqstore.py", needs.seq_file),
        ("wifi.py", needs.wifi),
        ("deepsleep.py", needs.deep_sleep),
    ):
        if not needed:
            skip.add(rel)
    todo = ["app.py", "board.py", f"transport_{transport}.py"]
    todo += [f"sensors/{name}.py" for name in sensors]
    seen: set[str] = set()
    while todo:
        rel = todo.pop()
        if rel in seen or rel in skip:
            continue
        seen.add(rel)
        todo += _imports(FIRMWARE_DIR / rel, rel)
    # A package's __init__ that holds nothing but its docstring stays home: MicroPython imports
    # a directory without one as a package, and each module loaded costs the board RAM.
    return sorted(rel for rel in seen if not _docstring_only(FIRMWARE_DIR / rel))


def _docstring_only(path: Path) -> bool:
    """True for a module whose source is its docstring and nothing else."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def build_bundle(options: Any) -> list[Path]:
    """Write the bundle for `options` (build's arguments, by attribute); the files written."""
    if _opt(options, "key_file") is not None:
        options = argparse.Namespace(**{**vars(options), "key": key_of(options), "key_file": None})
    lay = bundle_layout(options)
    _check_options(options, lay)
    entries = config_entries(options, lay)  # refuses bad hardware options
    _check_destination(options, lay)
    if not FIRMWARE_DIR.is_dir():
        raise PrecastError(f"firmware package not found at {FIRMWARE_DIR}")
    out = Path(options.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        pkg = out / "precast_fw"
        if pkg.exists():
            shutil.rmtree(pkg)
        sensors = str(entries["SENSOR"]).split(",")
        needs = Needs(
            mic=lay.template.mic,
            native=bool(_opt(options, "mpy") and _opt(options, "march")),
            backlog=entries["BACKLOG"] > 0,
            seq_file=entries["SEQ_FILE"] is not None,
            wifi=entries.get("WIFI", entries["TRANSPORT"] == "udp"),  # as board.setup decides
            deep_sleep=entries["SLEEP"] == "deep",
        )
        for rel in firmware_modules(entries["TRANSPORT"], tuple(sensors), needs):
            (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(FIRMWARE_DIR / rel, pkg / rel)
        for stale in ("precast_template.mpy", "precast_template_late.mpy", "precast_config.mpy"):
            (out / stale).unlink(missing_ok=True)
        (out / "precast_template.py").write_text(template_source(lay, options.device))
        late = out / "precast_template_late.py"
        late.unlink(missing_ok=True)
        if needs.backlog:  # the delayed frame: only a kept reading goes out in one
            late.write_text(template_source(lay.late, options.device))
        (out / "precast_config.py").write_text(config_source(entries))
        (out / "main.py").write_text(MAIN_SOURCE)
        hardware.write_secrets(options, out)  # into DIR, never into the listing
    except OSError as e:
        raise PrecastError(f"cannot write {out}: {e}") from None
    if _opt(options, "mpy"):
        modules = _precompile(out, _opt(options, "march"))
    else:
        modules = [*sorted(pkg.rglob("*.py")), *_top_modules(out)]
    return [out / "main.py", *modules]
