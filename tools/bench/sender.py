"""Host sender benchmark: frames/s into a veth pair, six ways side by side, in one run.

    sudo .venv/bin/python tools/bench/sender.py [--seconds 2] [--rounds 3]

Each way runs as its own process in a network namespace (A) whose veth
end faces another namespace (B) with no address, where every frame is
dropped after the IP route lookup: the numbers measure the sending side.
A way's rate is the kernel's own tx_packets counter of A's veth end,
read from /proc/PID/net/dev over --seconds after a warm-up, so every way
is measured by the same judge. Ways, one template (env-node, 64-byte
frames):

- scapy-sendp: scapy builds each frame and sendp() sends it
- scapy-l2socket: scapy builds each frame, one reused conf.L2socket sends it
- udp-sendto: a plain UDP socket, sendto() of a fixed payload in a loop
- precast-per-frame: `precast send --count 0 --per-frame` (one send() per frame)
- precast-tx-ring: `precast send --count 0` (PACKET_TX_RING, batches patched with numpy)
- trafgen: netsniff-ng's trafgen, C over a TX ring, one CPU, a fixed frame

trafgen is Debian's netsniff-ng package: `apt-get install netsniff-ng`.
Rounds interleave the ways so a busy moment of a shared machine hits them
alike; the table shows each way's median over the rounds.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "templates" / "env-node.toml"
VALUES = ["temperature=21.5", "humidity=40.25", "pressure=101325", "battery=3000"]
WAYS = [
    "scapy-sendp",
    "scapy-l2socket",
    "udp-sendto",
    "precast-per-frame",
    "precast-tx-ring",
    "trafgen",
]
SRC_IP, DST_IP = "192.0.2.2", "192.0.2.1"


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


class Link:
    """Namespaces A (sender) and B (sink) joined by a veth pair; B's end has no address."""

    def __init__(self) -> None:
        tag = f"pcsb{os.getpid() % 100000}"
        self.a, self.b = f"{tag}A", f"{tag}B"
        self.ia, self.ib = f"{tag}a", f"{tag}b"
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
            sh("ip", "netns", "add", ns)
        sh(
            "ip",
            "-n",
            self.a,
            "link",
            "add",
            self.ia,
            "type",
            "veth",
            "peer",
            "name",
            self.ib,
            "netns",
            self.b,
        )
        for ns, dev in ((self.a, self.ia), (self.b, self.ib)):
            sh(
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-q",
                "-w",
                f"net.ipv6.conf.{dev}.disable_ipv6=1",
            )
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", self.a, "addr", "add", f"{SRC_IP}/24", "dev", self.ia)
        self.mac_a = sh("ip", "-n", self.a, "-br", "link", "show", self.ia).split()[2]
        self.mac_b = sh("ip", "-n", self.b, "-br", "link", "show", self.ib).split()[2]
        sh(
            "ip",
            "-n",
            self.a,
            "neigh",
            "replace",
            DST_IP,
            "lladdr",
            self.mac_b,
            "dev",
            self.ia,
            "nud",
            "permanent",
        )

    def exec(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.a, *cmd]

    def close(self) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def tx_packets(pid: int, dev: str) -> int:
    for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == dev:
            return int(rest.split()[9])
    raise RuntimeError(f"{dev} not in /proc/{pid}/net/dev")


# ---- workers: each runs inside namespace A until killed -------------------------------------


def worker(way: str, iface: str, template: Path) -> None:
    from precast.wire.codec import encode, encode_raw, raw_values
    from precast.wire.layout import load_layouts

    lay = load_layouts([template])[0]
    values = dict(v.split("=") for v in VALUES)
    n = lay.template.network
    if way.startswith("scapy"):
        from scapy.all import IP, UDP, Ether, Raw, conf, sendp  # type: ignore[import-untyped]

        sock = conf.L2socket(iface=iface) if way == "scapy-l2socket" else None
        raws = raw_values(lay, values)
        eth = Ether(src=n.src_mac, dst=n.dst_mac)
        seq = 0
        while True:
            payload = encode_raw(lay, raws, 1, seq)[42:]
            ip = IP(src=n.src_ip, dst=n.dst_ip, id=0, flags="DF", ttl=n.ttl)
            pkt = eth / ip / UDP(sport=n.src_port, dport=n.dst_port) / Raw(payload)
            if sock is None:
                sendp(pkt, iface=iface, verbose=False)
            else:
                sock.send(pkt)
            seq += 1
    if way == "udp-sendto":
        payload = encode(lay, values, 1, 0)[42:]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        addr = (n.dst_ip, n.dst_port)
        sendto = s.sendto
        while True:
            sendto(payload, addr)
    raise SystemExit(f"unknown way {way}")


def command(way: str, link: Link, template: Path, cfg: Path) -> list[str]:
    py = sys.executable
    precast = [
        py,
        "-m",
        "precast.cli",
        "send",
        str(template),
        "--device",
        "1",
        "--count",
        "0",
        "--iface",
        link.ia,
        "--no-progress",
        *VALUES,
    ]
    if way == "precast-tx-ring":
        return link.exec(*precast)
    if way == "precast-per-frame":
        return link.exec(*precast, "--per-frame")
    if way == "trafgen":
        return link.exec("trafgen", "-o", link.ia, "-i", str(cfg), "-n", "0", "-P", "1", "-C")
    return link.exec(py, __file__, "--worker", way, "--iface", link.ia, "--template", str(template))


def _die_with_parent() -> None:
    """In the child: SIGKILL when the benchmark dies, however it dies.

    A worker sends flat out forever; a benchmark killed before its cleanup
    once left one spinning a core for minutes. PR_SET_PDEATHSIG (1) survives
    the exec of `ip netns exec`, which execs the command in turn.
    """
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def measure(cmd: list[str], dev: str, warmup: float, seconds: float) -> float:
    # Its own process group: trafgen forks its workers, and a signal must reach them all.
    p = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        time.sleep(warmup)
        if p.poll() is not None:
            raise RuntimeError(f"{cmd} exited: {p.stderr.read().decode() if p.stderr else ''}")
        t1, c1 = time.monotonic(), tx_packets(p.pid, dev)
        time.sleep(seconds)
        t2, c2 = time.monotonic(), tx_packets(p.pid, dev)
    finally:
        os.killpg(p.pid, signal.SIGINT)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        try:
            os.killpg(p.pid, signal.SIGKILL)  # any worker left behind
        except ProcessLookupError:
            pass
    return (c2 - c1) / (t2 - t1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per way")
    ap.add_argument("--warmup", type=float, default=0.7, help="seconds before measuring")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ways", nargs="+", default=WAYS, choices=WAYS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--iface", help=argparse.SUPPRESS)
    ap.add_argument("--template", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        try:
            worker(args.worker, args.iface, Path(args.template))
        except KeyboardInterrupt:
            pass
        return 0
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("needs root and iproute2 (network namespaces, AF_PACKET)", file=sys.stderr)
        return 2
    ways = list(args.ways)
    if "trafgen" in ways and shutil.which("trafgen") is None:
        print(
            "trafgen not found: `apt-get install netsniff-ng` for the native anchor; "
            "leaving it out",
            file=sys.stderr,
        )
        ways.remove("trafgen")
    sys.path.insert(0, str(ROOT / "host"))
    from precast.wire.layout import load_layouts

    link = Link()
    tmp = Path(tempfile.mkdtemp(prefix="pcsbench"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # clean up the namespaces
    try:
        text = TEMPLATE.read_text().replace(
            'dst_mac = "ff:ff:ff:ff:ff:ff"', f'dst_mac = "{link.mac_b}"'
        )
        text = text.replace('src_mac = "02:00:00:00:00:01"', f'src_mac = "{link.mac_a}"')
        template = tmp / "env-node.toml"
        template.write_text(text)
        frame = load_layouts([template])[0].frame
        cfg = tmp / "frame.cfg"
        cfg.write_text("{ " + ", ".join(f"0x{b:02x}" for b in frame) + " }\n")
        rates: dict[str, list[float]] = {w: [] for w in ways}
        for r in range(args.rounds):
            for way in ways:
                rate = measure(
                    command(way, link, template, cfg), link.ia, args.warmup, args.seconds
                )
                rates[way].append(rate)
                print(f"round {r + 1} {way:>18}: {rate:12,.0f} frames/s", file=sys.stderr)
    finally:
        link.close()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {w: statistics.median(v) for w, v in rates.items()}
    anchor = med.get("trafgen")
    l2 = med.get("scapy-l2socket")
    print(
        f"\n{len(frame)}-byte frames into a veth pair, median of {args.rounds} rounds of "
        f"{args.seconds:g} s, {os.cpu_count()} CPUs\n"
    )
    print("| way | frames/s | vs trafgen | vs scapy L2 socket |")
    print("|---|---:|---:|---:|")
    for w in ways:
        vt = f"{med[w] / anchor:.2f}" if anchor else "-"
        x = med[w] / l2 if l2 else 0.0
        vs = "-" if not l2 else f"{x:,.0f}x" if x >= 10 else f"{x:.2f}x"
        print(f"| {w} | {med[w]:,.0f} | {vt} | {vs} |")
    if anchor and "precast-tx-ring" in med:
        per_round = [a / b for a, b in zip(rates["precast-tx-ring"], rates["trafgen"], strict=True)]
        print("\nTX ring / trafgen per round: " + ", ".join(f"{x:.2f}" for x in per_round))
    return 0


if __name__ == "__main__":
    sys.exit(main())
