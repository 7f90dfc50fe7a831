"""A real Mosquitto broker for the MQTT tests, its certificates, and a mosquitto_sub judge.

The broker runs from a config in a temporary directory on a free port of
127.0.0.1, without persistence (a restart forgets retained messages, as a
broker that lost its disk would). As root Mosquitto would drop to the
`mosquitto` user, which cannot read the test's files: the config says
`user root` then. Certificates (a CA, a server certificate for 127.0.0.1 and
a client certificate) are made with openssl; the password file with
mosquitto_passwd. The judge is mosquitto_sub, not the paho-mqtt the collector
uses: its `%j` lines carry topic, payload and the retain flag.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
MOSQUITTO_PUB = shutil.which("mosquitto_pub")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
OPENSSL = shutil.which("openssl")

SUB_FORMAT = ("-F", "%j", "-q", "1")
needs_mosquitto = pytest.mark.skipif(
    not (MOSQUITTO and MOSQUITTO_SUB and MOSQUITTO_PUB and MOSQUITTO_PASSWD),
    reason="mosquitto and mosquitto-clients are not installed (tools/sysdeps.sh installs them)",
)


# What the issue asks of each shipped field, written out by hand (not from the code's table).
EXPECTED = {
    ("env-node", "temperature"): ("Temperature", "°C", "temperature", "measurement", 2),
    ("env-node", "humidity"): ("Humidity", "%", "humidity", "measurement", 2),
    ("env-node", "pressure"): ("Pressure", "Pa", "pressure", "measurement", 0),
    ("env-node", "battery"): ("Battery", "mV", "voltage", "measurement", 0),
    ("minimal", "value"): ("Value", None, None, "measurement", 0),
    ("power-meter", "energy"): ("Energy", "Wh", "energy", "total_increasing", 0),
    ("power-meter", "power"): ("Power", "W", "power", "measurement", 1),
    ("power-meter", "voltage"): ("Voltage", "V", "voltage", "measurement", 2),
    ("power-meter", "power_factor"): ("Power factor", None, "power_factor", "measurement", 2),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing the broker has


def _openssl(cmd: str, cwd: Path, *args: str) -> None:
    assert OPENSSL, "openssl is needed"
    argv = [OPENSSL, *cmd.split(), *args]
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certs(d: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (EC P-256)."""
    d.mkdir(parents=True, exist_ok=True)
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    for ca in ("ca", "other-ca"):
        _openssl(
            f"req -x509 {ec} -keyout {ca}.key -out {ca}.crt -days 2",
            d,
            *("-subj", f"/CN=precast test {ca}"),
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        )
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        _openssl(f"req {ec} -keyout {who}.key -out {who}.csr", d, "-subj", f"/CN=precast {who}")
        _openssl(
            f"x509 -req -in {who}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out {who}.crt "
            f"-days 2 -extfile {who}.ext",
            d,
        )
    return Certs(
        ca=d / "ca.crt",
        server_cert=d / "server.crt",
        server_key=d / "server.key",
        client_cert=d / "client.crt",
        client_key=d / "client.key",
        other_ca=d / "other-ca.crt",
    )


class Mosquitto:
    """A mosquitto process on a free port; stop() and start() keep the port."""

    def __init__(
        self,
        tmp: Path,
        users: dict[str, str] | None = None,
        certs: Certs | None = None,
        require_client_cert: bool = False,
    ) -> None:
        assert MOSQUITTO
        self.dir = tmp / f"mosquitto-{free_port()}"
        self.dir.mkdir()
        self.port = free_port()
        self.users = users
        self.certs = certs
        lines = [f"listener {self.port} 127.0.0.1", "persistence false"]
        lines += [f"log_dest file {self.dir / 'mosquitto.log'}", "log_type all"]
        if os.geteuid() == 0:
            lines.append("user root")
        if users:
            pw = self.dir / "passwd"
            pw.touch(mode=0o600)
            for user, password in users.items():
                subprocess.run(
                    [str(MOSQUITTO_PASSWD), "-b", str(pw), user, password],
                    check=True,
                    capture_output=True,
                    timeout=10,
                )
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if certs:
            lines += [
                f"cafile {certs.ca}",
                f"certfile {certs.server_cert}",
                f"keyfile {certs.server_key}",
            ]
            if require_client_cert:
                lines.append("require_certificate true")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.subscribers: list[Subscriber] = []  # closed with the broker (close())
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr", "ab"),
        )

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            except OSError:
                return False
            return True

        wait_for(listening, 10, "mosquitto to listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        """Stop the broker for good, and its subscribers: mosquitto_sub would reconnect forever."""
        for sub in self.subscribers:
            sub.close()
        self.stop()

    def log(self) -> str:
        p = self.dir / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""

    @property
    def url_base(self) -> str:
        return f"{'mqtts' if self.certs else 'mqtt'}://127.0.0.1:{self.port}"

    def client_args(self) -> list[str]:
        """mosquitto_sub/_pub options to reach this broker as its first user."""
        args = ["-h", "127.0.0.1", "-p", str(self.port), "-V", "mqttv311"]
        if self.users:
            user, password = next(iter(self.users.items()))
            args += ["-u", user, "-P", password]
        if self.certs:
            args += ["--cafile", str(self.certs.ca)]
            args += ["--cert", str(self.certs.client_cert), "--key", str(self.certs.client_key)]
        return args


class Subscriber:
    """mosquitto_sub on a topic filter, its messages collected in a file."""

    def __init__(self, broker: Mosquitto, topic: str = "#", name: str = "sub") -> None:
        assert MOSQUITTO_SUB
        self.path = broker.dir / f"{name}-{time.monotonic_ns()}.jsonl"
        self._out = open(self.path, "wb")
        self.proc = subprocess.Popen(
            [
                MOSQUITTO_SUB,
                *broker.client_args(),
                "-t",
                topic,
                "-t",
                "precast-test/#",
                *SUB_FORMAT,
            ],
            stdout=self._out,
            stderr=subprocess.PIPE,
        )
        # mosquitto_sub prints nothing when it has subscribed; a marker message says it has.
        marker = f"precast-test/marker/{self.path.name}"
        self.broker = broker
        broker.subscribers.append(self)

        def subscribed() -> bool:
            publish(broker, marker, "x")
            return any(m["topic"] == marker for m in self._read())

        wait_for(subscribed, 10, "mosquitto_sub to subscribe")

    def _read(self) -> list[dict[str, Any]]:
        out = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line still being written
        return out

    def messages(self, prefix: str = "") -> list[dict[str, Any]]:
        """{"topic", "payload" (text), "retain" (0/1), ...} so far, the markers left out."""
        return [
            m
            for m in self._read()
            if m["topic"].startswith(prefix) and not m["topic"].startswith("precast-test/")
        ]

    def wait(
        self,
        pred: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 10.0,
        what: str = "messages",
    ) -> list[dict[str, Any]]:
        wait_for(lambda: pred(self.messages()), timeout, what)
        return self.messages()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self._out.close()


def publish(broker: Mosquitto, topic: str, payload: str, retain: bool = False) -> None:
    """mosquitto_pub one message."""
    assert MOSQUITTO_PUB
    args = [MOSQUITTO_PUB, *broker.client_args(), "-t", topic, "-m", payload, "-q", "1"]
    subprocess.run(
        [*args, *(["-r"] if retain else [])], check=True, capture_output=True, timeout=10
    )


def retained(broker: Mosquitto, topic: str) -> dict[str, str]:
    """{topic: payload} of the retained messages under a filter, as a late subscriber sees them.

    mosquitto_sub --retained-only exits at the first message that is not retained: a marker
    published after the broker has sent the retained ones.
    """
    assert MOSQUITTO_SUB
    marker = f"precast-test/end/{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [
            MOSQUITTO_SUB,
            *broker.client_args(),
            "-t",
            topic,
            "-t",
            marker,
            "-F",
            "%j",
            "--retained-only",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            publish(broker, marker, "end")
            try:
                proc.wait(0.1)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
        out, _ = proc.communicate(timeout=5)
    got = {}
    for line in out.splitlines():
        m = json.loads(line)
        if m["topic"] != marker:
            assert m["retain"] == 1, m
            got[m["topic"]] = m["payload"]
    return got


def check_config(cfg: dict[str, Any], prefix: str, device: int, template: str, field: str) -> None:
    """Assert every key issue 12 lists, with the values it gives, for one field's config."""
    from precast import __version__
    from precast.collect.sinks.discovery import collector_node, node

    label, unit, dclass, sclass, digits = EXPECTED[(template, field)]
    assert cfg["name"] == label
    assert cfg["unique_id"] == f"{node(prefix, device)}_{field}"
    assert cfg["state_topic"] == f"{prefix}/{device}/reading"
    assert cfg["value_template"] == "{{ value_json.fields.get('" + field + "', '') }}"
    assert [a["topic"] for a in cfg["availability"]] == [
        f"{prefix}/status",
        f"{prefix}/{device}/availability",
    ]
    assert cfg["availability_mode"] == "all"
    assert cfg.get("unit_of_measurement") == unit
    assert cfg.get("device_class") == dclass
    assert cfg["state_class"] == sclass
    assert cfg.get("suggested_display_precision") == digits
    assert cfg["device"]["identifiers"] == [node(prefix, device)]
    assert cfg["device"]["via_device"] == collector_node(prefix)
    assert cfg["device"]["model"] == template
    assert cfg["device"]["manufacturer"] == "precast"
    assert cfg["device"]["sw_version"] == __version__
    assert cfg["device"]["name"]
