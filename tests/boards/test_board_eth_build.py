"""`precast build --transport w5500|enc28j60`: the chip's wiring, the frame's addresses, no WiFi.

Defaults (a W5500-EVB-Pico for w5500, an ESP32 DevKit's VSPI for enc28j60)
land in precast_config.py; --dst-mac/--src-mac/--src-ip land in the frame
(scapy reads it back); a bad MAC, a multicast source MAC or a pin the
MCU cannot have is one line and exit 2; `--dst-mac auto` finds the MAC of
an address on a veth link through the kernel's neighbour table, and says
so clearly for an address that is not on a local link.
"""

from __future__ import annotations

import ast
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from firmware_kit import build
from kit import TEMPLATES, VethPair, netns_available, precast, run_bundle
from precast.boards.ethernet import neighbour_mac
from precast.errors import UsageError
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether

ENV = TEMPLATES / "env-node.toml"


def _config(out: Path) -> dict[str, object]:
    tree = ast.parse((out / "precast_config.py").read_text())
    return {
        t.id: ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }


def _frame(out: Path) -> Ether:
    tree = ast.parse((out / "precast_template.py").read_text())
    for n in tree.body:
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "FRAME":
            return Ether(ast.literal_eval(n.value))
    raise AssertionError("no FRAME")


@pytest.mark.parametrize(
    ("transport", "want"),
    [
        ("w5500", (0, 18, 19, 16, 17, 20, 20_000_000)),
        ("enc28j60", (2, 18, 23, 19, 5, None, 8_000_000)),
    ],
)
def test_eth_build_defaults(tmp_path: Path, transport: str, want: tuple[object, ...]) -> None:
    build(tmp_path, ENV, "--device", "1", "--transport", transport)
    c = _config(tmp_path)
    keys = ("SPI_ID", "SPI_SCK", "SPI_MOSI", "SPI_MISO", "CS_PIN", "ETH_RESET", "SPI_BAUD")
    assert tuple(c[k] for k in keys) == want
    assert c["TRANSPORT"] == transport and c["WIFI"] is False
    assert (tmp_path / "precast_fw" / f"transport_{transport}.py").exists()


def test_eth_build_overrides_addresses(tmp_path: Path) -> None:
    build(
        tmp_path,
        ENV,
        "--device",
        "1",
        "--transport",
        "enc28j60",
        "--dst-mac",
        "00-1B-21-AA-bb-01",
        "--src-mac",
        "02:12:34:56:78:9a",
        "--src-ip",
        "10.1.2.3",
        "--collector",
        "10.1.2.1:9999",
        "--spi",
        "1",
        "--spi-sck",
        "14",
        "--spi-mosi",
        "13",
        "--spi-miso",
        "12",
        "--cs",
        "15",
        "--eth-reset",
        "4",
        "--eth-duplex",
        "full",
    )
    f = _frame(tmp_path)
    assert (f.dst, f.src, f[IP].src, f[IP].dst) == (
        "00:1b:21:aa:bb:01",
        "02:12:34:56:78:9a",
        "10.1.2.3",
        "10.1.2.1",
    )
    del f[IP].chksum
    assert Ether(bytes(_frame(tmp_path)))[IP].chksum == Ether(bytes(f))[IP].chksum
    c = _config(tmp_path)
    assert (c["SPI_ID"], c["SPI_SCK"], c["CS_PIN"], c["ETH_RESET"], c["ETH_FULL_DUPLEX"]) == (
        1,
        14,
        15,
        4,
        True,
    )


BAD = [
    (["--dst-mac", "00:11:22:33:44"], "not a MAC address"),
    (["--src-mac", "zz:11:22:33:44:55"], "not a MAC address"),
    (["--src-mac", "01:00:5e:00:00:01"], "multicast"),
    (["--src-ip", "10.0.0.256"], "not an IPv4 address"),
    (["--spi-sck", "5"], "SPI0's SCK is on GPIO 2, 6, 18, 22"),
    (["--cs", "30"], "GPIO 0..29"),
    (["--spi", "2"], "SPI 0 and 1"),
    (["--spi-baud", "100000000"], "at most 80000000 Hz"),
    (["--mcu", "esp32", "--spi", "2", "--eth-reset", "none", "--cs", "35"], "inputs only"),
    (["--mcu", "esp32", "--spi", "2", "--eth-reset", "none", "--spi-sck", "9"], "flash"),
    (["--mcu", "esp32", "--spi", "2", "--eth-reset", "none", "--spi-mosi", "24"], "no GPIO 24"),
    (["--cs", "18"], "must all differ"),
    (["--dst-mac", "auto"], "needs --collector"),
]


@pytest.mark.parametrize(("args", "said"), BAD[:-1])  # firmware_kit's build adds a collector
def test_eth_build_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], said: str
) -> None:
    """Each refused by argparse's types (exit 2) or build's checks (UsageError: exit 2)."""
    with pytest.raises((SystemExit, UsageError)) as e:
        build(tmp_path, ENV, "--device", "1", "--transport", "w5500", *args)
    if isinstance(e.value, SystemExit):
        assert e.value.code == 2
        assert said in capsys.readouterr().err.strip().splitlines()[-1]
    else:
        assert said in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(("args", "said"), [BAD[2], BAD[4], BAD[-1]])
def test_eth_build_bad_input_is_one_line(tmp_path: Path, args: list[str], said: str) -> None:
    """Through the CLI: one line on stderr, exit 2, no traceback."""
    r = precast(
        "build", str(ENV), "--device", "1", "--out", str(tmp_path), "--transport", "w5500", *args
    )
    assert r.returncode == 2
    assert said in r.stderr.strip().splitlines()[-1]
    assert "Traceback" not in r.stderr


@pytest.fixture
def lan() -> Iterator[VethPair]:
    """A veth link with addresses at both ends, in a subnet of its own (198.18.N.0/24)."""
    why = netns_available()
    if why:
        pytest.skip(why)
    net = f"198.18.{os.getpid() % 250}"
    pair = VethPair("pce", inner_ip=f"{net}.1/24")
    try:
        subprocess.run(["ip", "addr", "add", f"{net}.2/24", "dev", pair.outer], check=True)
        yield pair
    finally:
        pair.close()


def test_eth_build_dst_mac_auto(tmp_path: Path, lan: VethPair) -> None:
    veth = lan
    quiet = veth.inner_ip.rsplit(".", 1)[0] + ".77"
    r = precast(
        "build",
        str(ENV),
        "--device",
        "1",
        "--out",
        str(tmp_path / "ok"),
        "--transport",
        "w5500",
        "--collector",
        f"{veth.inner_ip}:20547",
        "--dst-mac",
        "auto",
    )
    assert r.returncode == 0, r.stderr
    assert _frame(tmp_path / "ok").dst == veth.inner_mac
    # An address behind no local link: one clear line, no frame built.
    r = precast(
        "build",
        str(ENV),
        "--device",
        "1",
        "--out",
        str(tmp_path / "off"),
        "--transport",
        "w5500",
        "--collector",
        "198.51.100.7",
        "--dst-mac",
        "auto",
    )
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert "not on a local link" in line or "no route to 198.51.100.7" in line
    # On the link but silent: ARP goes unanswered.
    with pytest.raises(UsageError, match="did not answer ARP"):
        neighbour_mac(quiet, wait_s=0.5)


NO_NETWORK = r"""
import sys
import precast_config as cfg
from precast_fw import board
b = board.setup(cfg)
__import__("precast_fw.transport_" + cfg.TRANSPORT)  # the one transport in the bundle
print("network" in sys.modules, "imported" in dir(sys.modules.get("network")))
"""


@pytest.mark.usefixtures("mp_port")
@pytest.mark.parametrize("transport", ["w5500", "enc28j60"])
def test_eth_bundle_never_imports_network(tmp_path: Path, transport: str) -> None:
    build(tmp_path, ENV, "--device", "1", "--transport", transport, "--watchdog-ms", "0")
    # A stand-in `network` module: importing it would show in sys.modules.
    (tmp_path / "network.py").write_text("imported = True\nSTA_IF = 0\n")
    r = run_bundle(tmp_path, NO_NETWORK)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["False", "False"]
    # The control: the udp transport's bundle does import it (and then wants WiFi).
    build(tmp_path / "u", ENV, "--device", "1", "--watchdog-ms", "0")
    (tmp_path / "u" / "network.py").write_text("imported = True\nSTA_IF = 0\n")
    r = run_bundle(tmp_path / "u", NO_NETWORK)
    assert "network" in r.stdout + r.stderr


def test_eth_build_help_says_the_defaults() -> None:
    r = precast("build", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "W5500-EVB-Pico (RP2040, SPI 0: SCK 18, MOSI 19, MISO 16, CS 17, reset 20" in text
    assert "ESP32 DevKit's VSPI (SPI 2: SCK 18, MOSI 23, MISO 19, CS 5, no reset" in text
    assert "--dst-mac auto" in text
    d = precast("deploy", "--help")  # deploy takes every option of build
    assert d.returncode == 0 and "--transport {udp,packet,serial,w5500,enc28j60}" in d.stdout
    assert all(f in d.stdout for f in ("--spi-sck", "--eth-reset", "--src-ip", "--dst-mac"))


def test_a_raw_build_on_the_templates_defaults_says_so(tmp_path: Path) -> None:
    """Over UDP the board's stack picks its addresses; a raw-Ethernet bundle sends what the
    template says, so the defaults (the same MAC on every board, a documentation IPv4
    address, the broadcast MAC) are each a warning line, and none when given."""
    base = ["build", str(ENV), "--device", "1", "--collector", "10.1.2.1:20547"]
    r = precast(*base, "--transport", "w5500", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    warned = [x for x in r.stderr.splitlines() if x.startswith("precast build: warning: ")]
    assert len(warned) == 3, r.stderr
    assert "--src-mac" in warned[0] and "--src-ip" in warned[1] and "--dst-mac" in warned[2]
    given = [
        "--src-mac",
        "02:12:34:56:78:9a",
        "--src-ip",
        "10.1.2.3",
        "--dst-mac",
        "02:00:5e:00:00:01",
    ]
    r = precast(*base, "--transport", "enc28j60", *given, "--out", str(tmp_path / "b"))
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    r = precast(*base, "--out", str(tmp_path / "c"))  # udp: the board's stack addresses it
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
