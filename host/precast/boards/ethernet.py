"""Build options for raw Ethernet from a board: the SPI chip's wiring and the frame's addresses.

`--transport w5500` (WIZnet W5500, MACRAW) and `--transport enc28j60`
(Microchip ENC28J60) send the template's whole frame, so the board needs
no IP stack and joins no WiFi. The wiring defaults suit the boards people
use: a W5500-EVB-Pico (RP2040, the W5500 on SPI0) for w5500 and an ESP32
DevKit's VSPI for enc28j60. A raw sender on a LAN must address the
collector's MAC (or its router's), not broadcast: --dst-mac, --src-mac
and --src-ip override the template's network section for the build, and
`--dst-mac auto` asks this host's neighbour table for --collector's MAC
after one probe datagram.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from precast.errors import UsageError

ETH_TRANSPORTS = ("w5500", "enc28j60")
MCUS = ("rp2040", "esp32")


@dataclass(frozen=True)
class Wiring:
    """Where the chip hangs: the MCU, the SPI controller, its pins, the clock."""

    mcu: str
    spi: int
    sck: int
    mosi: int
    miso: int
    cs: int
    reset: int | None
    baud: int


DEFAULTS = {
    # W5500-EVB-Pico: SPI0 on GP18 (SCK), GP19 (MOSI), GP16 (MISO), CS GP17, RSTn GP20.
    "w5500": Wiring("rp2040", 0, 18, 19, 16, 17, 20, 20_000_000),
    # ESP32 DevKit VSPI (SPI 2): SCK 18, MOSI 23, MISO 19, CS 5; RESET not wired.
    "enc28j60": Wiring("esp32", 2, 18, 23, 19, 5, None, 8_000_000),
}
MAX_BAUD = {"w5500": 80_000_000, "enc28j60": 20_000_000}  # datasheets' SCK limits
# RP2040 datasheet 2.19.2, the GPIO function table: which pins carry each SPI signal.
_RP2040_SPI = {
    0: {"sck": {2, 6, 18, 22}, "mosi": {3, 7, 19, 23}, "miso": {0, 4, 16, 20}},
    1: {"sck": {10, 14, 26}, "mosi": {11, 15, 27}, "miso": {8, 12, 24, 28}},
}
_ESP32_GPIO = set(range(0, 20)) | {21, 22, 23, 25, 26, 27} | set(range(32, 40))
_ESP32_FLASH = set(range(6, 12))  # the SPI flash: not for the user
_ESP32_INPUT_ONLY = set(range(34, 40))
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")


def mac_arg(text: str) -> str:
    """argparse type for a MAC address: six hex pairs; the lower-case colon form."""
    if not _MAC.match(text):
        raise argparse.ArgumentTypeError(f"not a MAC address (six hex pairs): {text!r}")
    return text.replace("-", ":").lower()


def dst_mac_arg(text: str) -> str:
    """argparse type for --dst-mac: a MAC address, or `auto`."""
    return "auto" if text == "auto" else mac_arg(text)


def src_mac_arg(text: str) -> str:
    """argparse type for --src-mac: a unicast MAC address."""
    mac = mac_arg(text)
    if int(mac[:2], 16) & 1:
        raise argparse.ArgumentTypeError(f"{mac} is a multicast address: a source must be unicast")
    return mac


def ipv4_arg(text: str) -> str:
    """argparse type for --src-ip."""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {text!r}") from None


def _pin(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a pin number: {text!r}")
    return int(text)


NO_RESET = -1  # --eth-reset none: not wired (None is "not given": the board's default)


def _reset_pin(text: str) -> int:
    return NO_RESET if text.lower() == "none" else _pin(text)


def _hz(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"not a clock in Hz: {text!r}")
    return int(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add --spi and its pins, --cs, --eth-reset, --mcu, --dst-mac, --src-mac, --src-ip."""
    w, e = DEFAULTS["w5500"], DEFAULTS["enc28j60"]
    g = p.add_argument_group(
        "raw Ethernet (--transport w5500|enc28j60)",
        "The chip's wiring. Defaults: w5500 on a W5500-EVB-Pico (RP2040, SPI "
        f"{w.spi}: SCK {w.sck}, MOSI {w.mosi}, MISO {w.miso}, CS {w.cs}, reset {w.reset}, "
        f"{w.baud // 1_000_000} MHz); enc28j60 on an ESP32 DevKit's VSPI (SPI {e.spi}: SCK "
        f"{e.sck}, MOSI {e.mosi}, MISO {e.miso}, CS {e.cs}, no reset, "
        f"{e.baud // 1_000_000} MHz). Example: precast build templates/env-node.toml "
        "--device 7 --out build/node7 --transport w5500 --collector 192.168.1.10 "
        "--dst-mac auto --src-ip 192.168.1.50",
    )
    g.add_argument(
        "--mcu",
        choices=MCUS,
        help="the board's microcontroller, for checking pins (default rp2040 for w5500, "
        "esp32 for enc28j60)",
    )
    g.add_argument("--spi", type=_pin, metavar="ID", help="SPI controller (machine.SPI id)")
    g.add_argument("--spi-sck", type=_pin, metavar="PIN", help="SPI clock pin")
    g.add_argument("--spi-mosi", type=_pin, metavar="PIN", help="SPI MOSI pin")
    g.add_argument("--spi-miso", type=_pin, metavar="PIN", help="SPI MISO pin")
    g.add_argument("--spi-baud", type=_hz, metavar="HZ", help="SPI clock")
    g.add_argument("--cs", type=_pin, metavar="PIN", help="the chip-select pin")
    g.add_argument(
        "--eth-reset", type=_reset_pin, metavar="PIN|none", help="the chip's reset pin, if wired"
    )
    g.add_argument(
        "--eth-duplex",
        choices=("half", "full"),
        default="half",
        help="enc28j60 only: the PHY's duplex; it does not autonegotiate, so a switch "
        "port settles on half (default half)",
    )
    g.add_argument(
        "--dst-mac",
        type=dst_mac_arg,
        metavar="MAC|auto",
        help="destination MAC, overriding the template's: the collector's (or its "
        "router's); auto: look --collector up in this host's neighbour table",
    )
    g.add_argument("--src-mac", type=src_mac_arg, metavar="MAC", help="the board's MAC (unicast)")
    g.add_argument("--src-ip", type=ipv4_arg, metavar="IP", help="the board's IPv4 address")


def _opt(options: Any, name: str) -> Any:
    return getattr(options, name, None)


def wiring(options: Any) -> Wiring:
    """The chip's wiring: the transport's defaults with the options given, checked."""
    transport = _opt(options, "transport")
    d = DEFAULTS[transport]
    reset = _opt(options, "eth_reset")
    reset = d.reset if reset is None else (None if reset == NO_RESET else reset)
    w = Wiring(
        mcu=_opt(options, "mcu") or d.mcu,
        spi=d.spi if _opt(options, "spi") is None else _opt(options, "spi"),
        sck=d.sck if _opt(options, "spi_sck") is None else _opt(options, "spi_sck"),
        mosi=d.mosi if _opt(options, "spi_mosi") is None else _opt(options, "spi_mosi"),
        miso=d.miso if _opt(options, "spi_miso") is None else _opt(options, "spi_miso"),
        cs=d.cs if _opt(options, "cs") is None else _opt(options, "cs"),
        reset=reset,
        baud=_opt(options, "spi_baud") or d.baud,
    )
    check_wiring(transport, w)
    return w


def check_wiring(transport: str, w: Wiring) -> None:
    """UsageError, one line, for a pin or controller the MCU cannot have."""
    if w.baud > MAX_BAUD[transport]:
        raise UsageError(
            f"--spi-baud {w.baud}: the {transport} clocks SPI at most {MAX_BAUD[transport]} Hz"
        )
    outputs = {"--spi-sck": w.sck, "--spi-mosi": w.mosi, "--cs": w.cs}
    if w.reset is not None:
        outputs["--eth-reset"] = w.reset
    pins = {**outputs, "--spi-miso": w.miso}
    if w.mcu == "rp2040":
        if w.spi not in _RP2040_SPI:
            raise UsageError(f"--spi {w.spi}: the RP2040 has SPI 0 and 1")
        for flag, pin in pins.items():
            if not 0 <= pin <= 29:
                raise UsageError(f"{flag} {pin}: the RP2040 has GPIO 0..29")
        for sig in ("sck", "mosi", "miso"):
            pin = getattr(w, sig)
            if pin not in _RP2040_SPI[w.spi][sig]:
                ok = ", ".join(map(str, sorted(_RP2040_SPI[w.spi][sig])))
                raise UsageError(
                    f"--spi-{sig} {pin}: SPI{w.spi}'s {sig.upper()} is on GPIO {ok} of the RP2040"
                )
    else:
        if w.spi not in (1, 2):
            raise UsageError(f"--spi {w.spi}: the ESP32's user SPI controllers are 1 and 2")
        for flag, pin in pins.items():
            if pin not in _ESP32_GPIO:
                raise UsageError(f"{flag} {pin}: the ESP32 has no GPIO {pin}")
            if pin in _ESP32_FLASH:
                raise UsageError(f"{flag} {pin}: GPIO 6..11 drive the ESP32's flash")
        for flag, pin in outputs.items():
            if pin in _ESP32_INPUT_ONLY:
                raise UsageError(f"{flag} {pin}: GPIO 34..39 of the ESP32 are inputs only")
    if len(set(pins.values())) != len(pins):
        raise UsageError("the SPI, CS and reset pins must all differ")


def config_entries(options: Any) -> dict[str, Any]:
    """precast_config.py's entries for a raw Ethernet transport (empty for the others)."""
    if _opt(options, "transport") not in ETH_TRANSPORTS:
        return {}
    w = wiring(options)
    return {
        "WIFI": False,  # the frame goes out through the chip: no network module, no WiFi
        "SPI_ID": w.spi,
        "SPI_BAUD": w.baud,
        "SPI_SCK": w.sck,
        "SPI_MOSI": w.mosi,
        "SPI_MISO": w.miso,
        "CS_PIN": w.cs,
        "ETH_RESET": w.reset,
        "ETH_FULL_DUPLEX": _opt(options, "eth_duplex") == "full",
    }


def _ip_json(*args: str) -> Any:
    try:
        r = subprocess.run(
            ["ip", "-j", *args], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UsageError(f"--dst-mac auto: cannot run `ip`: {e}") from None
    if r.returncode != 0:
        return None
    return json.loads(r.stdout or "[]")


def neighbour_mac(ip: str, probe_port: int = 9, wait_s: float = 2.0) -> str:
    """The MAC of `ip` on a local link, from `ip neigh` after one probe datagram."""
    route = _ip_json("route", "get", ip)
    if not route:
        raise UsageError(f"--dst-mac auto: no route to {ip} from this host")
    r = route[0]
    dev = r.get("dev", "")
    if "gateway" in r:
        raise UsageError(
            f"--dst-mac auto: {ip} is not on a local link (routed via {r['gateway']} on "
            f"{dev}): give --dst-mac, the MAC of the router the board sends through"
        )
    if dev == "lo" or r.get("type") == "local":
        raise UsageError(f"--dst-mac auto: {ip} is this host's own address")
    # One datagram to the discard port makes the kernel resolve the address (ARP).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"precast: neighbour probe", (ip, probe_port))
        except OSError as e:
            raise UsageError(f"--dst-mac auto: probe to {ip}: {e.strerror}") from None
    deadline = time.monotonic() + wait_s
    while True:
        for n in _ip_json("neigh", "show", ip, "dev", dev) or []:
            mac = n.get("lladdr")
            if mac and "FAILED" not in n.get("state", []):
                return str(mac).lower()
        if time.monotonic() > deadline:
            raise UsageError(
                f"--dst-mac auto: {ip} did not answer ARP on {dev}: is the collector up "
                "on this link?"
            )
        time.sleep(0.05)


def network_overrides(options: Any) -> dict[str, Any]:
    """The template network fields that --dst-mac, --src-mac and --src-ip replace."""
    out: dict[str, Any] = {}
    dst = _opt(options, "dst_mac")
    if dst == "auto":
        coll = _opt(options, "collector")
        if coll is None:
            raise UsageError("--dst-mac auto needs --collector IP: the address to look up")
        dst = neighbour_mac(coll[0])
        try:  # looked up once per build: deploy asks for the layout twice
            options.dst_mac = dst
        except AttributeError:
            pass
    if dst is not None:
        out["dst_mac"] = dst
    if _opt(options, "src_mac") is not None:
        out["src_mac"] = _opt(options, "src_mac")
    if _opt(options, "src_ip") is not None:
        out["src_ip"] = _opt(options, "src_ip")
    return out
