"""precast: compile a sensor's Ethernet/IPv4/UDP frame once, patch only the readings.

The public API:

    layout = compile_template(load_template("templates/env-node.toml"))
    frame = encode(layout, {"temperature": 21.5, ...}, device=7, seq=1)
    reading = Codec([layout]).decode(frame)   # a Reading, or a Rejected reason

The package, from the wire format up (each part imports only those above it):

- wire/     the format: constants, template, layout, codec, checks, validator, pcap, slip
- args.py   command-line types and option groups shared by every command
- serialport.py  a board's serial port: its names, the exclusive open, the one error line
- collect/  the collector daemon, its books, its store backends and sinks, `stats`
- send/     the host sender: engine, batches, transports, `send`, `simulate`, `bridge`
- boards/   firmware bundles (`build`), `deploy` (with its progress line), the virtual board
- view/     seeing it: the Wireshark dissector, `plot`, `top` (from the database alone)
- pytest_plugin.py  fixtures: a running collector, a virtual board, a sensor fleet
- harness.py        what those fixtures hand out (PrecastCollector, run_fleet, MicropythonBoard)
- cli.py    the `precast` command: dispatch and the one place errors become exits
"""

from __future__ import annotations

__version__ = "0.1.0"

from precast.errors import EncodeError, PrecastError, TemplateError, UsageError
from precast.wire.codec import Codec, Reading, Rejected, encode, encode_raw
from precast.wire.layout import Layout, compile_template
from precast.wire.template import (
    Field,
    Network,
    Template,
    load_template,
    load_templates,
    parse_template,
)

__all__ = [
    "Codec",
    "EncodeError",
    "Field",
    "Layout",
    "Network",
    "PrecastError",
    "Reading",
    "Rejected",
    "Template",
    "TemplateError",
    "UsageError",
    "__version__",
    "compile_template",
    "encode",
    "encode_raw",
    "load_template",
    "load_templates",
    "parse_template",
]
