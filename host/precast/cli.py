"""The `precast` command: argument parsing, dispatch, and the one place errors become exits.

Each command is a function taking the parsed arguments and returning an
exit status; domain errors (PrecastError) become one line on stderr and
exit 2 here, in main(), with --traceback to see where they came from.
Modules that own a command (collector, sender, ...) add it through their
own `register(subparsers)` listed in COMMAND_MODULES.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from precast import __version__
from precast.args import Parser, add_template_args, examples, key_arg, parse_assignments, uint32
from precast.errors import Interrupted, PrecastError, UsageError
from precast.wire.codec import Codec, encode
from precast.wire.constants import PAYLOAD_OFFSET
from precast.wire.layout import load_layouts, pick_layout

# Modules with a `register(subparsers)` that adds their commands, in help order.
COMMAND_MODULES: list[str] = [
    "precast.collect.cli",
    "precast.collect.stats",
    "precast.collect.device",
    "precast.boards.build",
    "precast.send.send",
    "precast.send.fleet",
    "precast.send.bridge",
    "precast.boards.virtual",
    "precast.boards.deploy",
    "precast.view.dissector",
    "precast.view.plot",
    "precast.view.top",
]

Handler = Callable[[argparse.Namespace], int]


def is_template_arg(arg: str) -> bool:
    """True when a command-line word names a template file or a directory of them."""
    return arg.endswith(".toml") or Path(arg).is_dir()


# ---- compile -------------------------------------------------------------------------------


def cmd_compile(args: argparse.Namespace) -> int:
    layouts = load_layouts(args.template)
    if args.json:
        docs = [lay.to_json() for lay in layouts]
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
        return 0
    for lay in layouts:
        t = lay.template
        n = t.network
        print(f"template {t.id} {t.name!r} ({t.source}): check {t.check}")
        print(
            f"  {n.src_mac} {n.src_ip}:{n.src_port} -> {n.dst_mac} {n.dst_ip}:{n.dst_port}"
            f" ttl {n.ttl} dscp {n.dscp}"
        )
        print(
            f"  frame {lay.frame_len} bytes, payload {lay.payload_len} bytes at {PAYLOAD_OFFSET},"
            f" IPv4 checksum 0x{lay.ip_checksum:04x}, struct {lay.body_fmt!r}"
        )
        print(f"  {'offset':>6}  {'type':<4} field (units = raw x scale + offset)")
        for s in lay.fields:
            f = s.field
            scale = f" x{f.scale}" if f.scale != 1 else ""
            off = f" {f.offset:+}" if f.offset else ""
            print(f"  {s.offset:6d}  {f.type:<4} {f.name}{scale}{off} {f.unit}".rstrip())
        print(f"  {lay.check_offset:6d}  {t.check}")
        late = lay.late
        print(
            f"  delayed: frame {late.frame_len} bytes, payload {late.payload_len}, age (u32 ms)"
            f" at {late.age_offset}, {t.check} at {late.check_offset},"
            f" IPv4 checksum 0x{late.ip_checksum:04x}"
        )
    return 0


# ---- encode --------------------------------------------------------------------------------


def cmd_encode(args: argparse.Namespace) -> int:
    lay = pick_layout([args.template], args.which)
    values = parse_assignments(args.values)
    if args.key is not None and not lay.template.mic:
        print(
            f"precast encode: warning: --key unused: template {lay.template.name!r} is checked "
            f"by {lay.template.check}, not a MIC",
            file=sys.stderr,
        )
    frame = encode(lay, values, args.device, args.seq, args.key, args.age_ms)
    print((frame[PAYLOAD_OFFSET:] if args.payload_only else frame).hex())
    return 0


# ---- decode --------------------------------------------------------------------------------


def _hex_inputs(words: Sequence[str]) -> Iterator[str]:
    if words:
        yield from words
        return
    for line in sys.stdin:
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def decode_lines(codec: Codec, inputs: Iterable[bytes | str]) -> int:
    """Print one JSON line per input; 1 when any was refused, else 0."""
    status = 0
    for item in inputs:
        out: dict[str, Any]
        if isinstance(item, str):
            try:
                data = bytes.fromhex(item.replace(":", " "))
            except ValueError:
                print(json.dumps({"error": f"not hex: {item[:40]!r}"}), flush=True)
                status = 1
                continue
        else:
            data = item
        r = codec.decode(data)
        out = r.to_json()
        if "error" in out:
            status = 1
        print(json.dumps(out), flush=True)
    return status


def cmd_decode(args: argparse.Namespace) -> int:
    templates = [a for a in args.items if is_template_arg(a)]
    hexes = [a for a in args.items if not is_template_arg(a)]
    if not templates:
        raise UsageError("decode needs at least one template (.toml file or directory)")
    codec = Codec(load_layouts(templates), key=args.key)
    pcap = getattr(args, "pcap", None)
    if pcap:
        if hexes:
            raise UsageError("give hex frames or --pcap, not both")
        from precast.wire.pcap import read_frames

        return decode_lines(codec, read_frames(pcap))
    return decode_lines(codec, _hex_inputs(hexes))


# ---- parser and main -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="precast",
        description="Precomputed Ethernet/IPv4/UDP frames for sensor readings.",
        epilog=examples(
            "precast compile templates/env-node.toml",
            "precast collect --templates templates --db precast.db",
            "precast simulate --templates templates --devices 10 --rate 100 --udp 127.0.0.1:20547",
            "precast stats --db precast.db",
            "precast COMMAND --help",
        ),
    )
    p.add_argument("--version", action="version", version=f"precast {__version__}")
    p.add_argument("--traceback", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser(
        "compile",
        help="compile templates and show their frame layout",
        description="Compile each template into its frame: the headers, the constant IPv4 "
        "checksum, the payload layout and where each field sits.",
        epilog=examples(
            "precast compile templates/env-node.toml",
            "precast compile templates/ --json",
        ),
    )
    c.add_argument("template", nargs="+", help="template .toml file or directory")
    c.add_argument("--json", action="store_true", help="print the layout as JSON")
    c.set_defaults(func=cmd_compile)

    e = sub.add_parser(
        "encode",
        help="encode one reading as a hex frame",
        description="Encode one reading (field values in units) as a whole Ethernet frame in "
        "hex, or its UDP payload with --payload-only.",
        epilog=examples(
            "precast encode templates/env-node.toml --device 7 --seq 1 "
            "temperature=21.45 humidity=40.5 pressure=101325 battery=3300",
            "precast encode templates/power-meter.toml --device 9 --seq 5 "
            "--key 2b7e151628aed2a6abf7158809cf4f3c "
            "--payload-only energy=123456 power=-1500.5 voltage=230.01 power_factor=0.95",
            "precast encode templates/minimal.toml --device 1 --seq 9 --age-ms 90000 value=5",
        ),
    )
    add_template_args(e)
    e.add_argument("--seq", type=uint32, required=True, help="sequence number (u32)")
    e.add_argument(
        "--age-ms",
        type=uint32,
        metavar="N",
        help="a delayed frame: the reading was taken N milliseconds before it is sent",
    )
    e.add_argument("--payload-only", action="store_true", help="print the UDP payload only")
    e.add_argument("values", nargs="*", metavar="NAME=VALUE", help="field values in units")
    e.set_defaults(func=cmd_encode, intermixed="values")

    d = sub.add_parser(
        "decode",
        help="decode hex frames or payloads to JSON lines",
        description="Arguments naming a .toml file or a directory are templates, the others hex "
        "frames or payloads; with no hex argument, hex lines are read from stdin. One JSON line "
        "per input; exit 1 when any input was refused.",
        epilog=examples(
            "precast decode templates/ 5010000100000007...",
            "precast decode templates/ --pcap capture.pcap",
            "precast encode templates/minimal.toml --device 1 --seq 1 value=5 | "
            "precast decode templates/",
        ),
    )
    d.add_argument("items", nargs="+", metavar="TEMPLATE|HEX")
    d.add_argument("--key", type=key_arg, help="AES-128 key, 32 hex digits (cmac templates)")
    d.add_argument("--pcap", metavar="FILE", help="read frames from a pcap capture")
    d.set_defaults(func=cmd_decode, intermixed="items")

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for sp in sub.choices.values():
        sp.set_defaults(parser=sp)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run precast; every domain error becomes one line on stderr and exit 2 (a Ctrl-C the
    command stopped cleanly on, Interrupted, exit 130)."""
    parser = build_parser()
    # argparse takes positionals in one run; NAME=VALUE words and hex frames may also come
    # after options, so a command that collects words names its list in `intermixed`.
    args, extra = parser.parse_known_args(argv)
    dest = getattr(args, "intermixed", None)
    if extra:
        if dest is None or any(w.startswith("-") for w in extra):
            # the command's own parser, so the pointer is to `precast COMMAND --help`
            command_parser: argparse.ArgumentParser = args.parser
            command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
        getattr(args, dest).extend(extra)
    func: Handler = args.func
    try:
        return func(args)
    except Interrupted as e:
        if args.traceback:
            raise
        print(f"precast: interrupted: {e}", file=sys.stderr)
        return 130
    except PrecastError as e:
        if args.traceback:
            raise
        print(f"precast: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
