"""precast deploy end to end: a collector, a virtual board, the bundle deployed with mpremote,
main.py running on the MicroPython unix port after the reset, readings in SQLite; only changed
files copied; secrets on the board only; clear errors for boards that are not there."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import KEY, TEMPLATES
from precast.boards.deploy import CONNECT_TIMEOUT_S
from precast.pytest_plugin import MicropythonBoard, PrecastCollector

PASSWORD = "correct horse battery staple"


@pytest.fixture
def precast_key() -> bytes:
    """The collector checks power-meter's CMAC with this key."""
    return KEY


def _sqlite_seqs(col: PrecastCollector, device: int) -> list[int]:
    import sqlite3

    con = sqlite3.connect(col.db)
    try:
        rows = con.execute("SELECT seq FROM readings WHERE device = ? ORDER BY seq", (device,))
        return [r[0] for r in rows]
    finally:
        con.close()


def test_deploy_runs_main_and_readings_arrive(
    micropython_board: MicropythonBoard, precast_collector: PrecastCollector
) -> None:
    out = micropython_board.deploy(
        TEMPLATES / "minimal.toml",
        7,
        transport="udp",
        count=20,
        interval_ms=0,
        collector=precast_collector.address,
    )
    assert any(line.endswith("board reset") for line in out.splitlines())
    assert (micropython_board.root / "main.py").exists()
    precast_collector.wait_for_readings(20, device=7, timeout=20)
    assert _sqlite_seqs(precast_collector, 7) == list(range(20))
    dev = precast_collector.device(7)
    assert (dev["received"], dev["lost"], dev["template"]) == (20, 0, 2)


def test_secrets_stay_on_the_board_and_redeploy_copies_changes(
    micropython_board: MicropythonBoard, precast_collector: PrecastCollector, tmp_path: Path
) -> None:
    key_file = tmp_path / "key.hex"
    key_file.write_text(KEY.hex() + "\n")
    pw_file = tmp_path / "wifi.txt"
    pw_file.write_text(PASSWORD + "\n")
    bundle = tmp_path / "bundle"
    opts = dict(
        collector=precast_collector.address,
        interval_ms=0,
        key_file=key_file,
        wifi_ssid="lab",
        wifi_password_file=pw_file,
        out=bundle,
    )
    out = micropython_board.deploy(TEMPLATES / "power-meter.toml", 9, count=10, **opts)
    # A cmac8 template: the collector accepts the readings only with the key from
    # precast_secrets.py on the board, as precast_config.py names no key.
    precast_collector.wait_for_readings(10, device=9, timeout=20)
    assert _sqlite_seqs(precast_collector, 9) == list(range(10))
    secrets = (micropython_board.root / "precast_secrets.py").read_text()
    assert repr(KEY) in secrets and repr(PASSWORD) in secrets and "'lab'" in secrets
    for text in [out, *(p.read_bytes().decode(errors="replace") for p in bundle.rglob("*.py"))]:
        assert KEY.hex() not in text.lower() and repr(KEY) not in text and PASSWORD not in text
    assert "KEY =" not in (micropython_board.root / "precast_config.py").read_text()

    # Again with one option changed: only precast_config.py differs.
    out = micropython_board.deploy(TEMPLATES / "power-meter.toml", 9, count=12, **opts)
    copied = [line.split()[1] for line in out.splitlines() if line.startswith("copied")]
    unchanged = [line.split()[1] for line in out.splitlines() if line.startswith("unchanged")]
    assert copied == ["precast_config.py"]
    assert "precast_secrets.py" in unchanged and "precast_fw/app.py" in unchanged
    # The board rebooted into main.py again: 12 more readings, under new seqs (the firmware
    # never sends a seq twice, across resets too), and with no gap: the first run stopped
    # cleanly, so it kept its exact next seq instead of the reservation's limit.
    precast_collector.wait_for_readings(22, device=9, timeout=20)
    assert _sqlite_seqs(precast_collector, 9) == list(range(22))

    # build's --secrets FILE instead: the user's file, with the key added, on the board only.
    mine = tmp_path / "mine.py"
    mine.write_text(f'WIFI_SSID = "home"\nWIFI_PASSWORD = "{PASSWORD}"\n')
    out = micropython_board.deploy(
        TEMPLATES / "power-meter.toml",
        9,
        count=12,
        collector=precast_collector.address,
        interval_ms=0,
        key_file=key_file,
        secrets=mine,
    )
    assert "copied     precast_secrets.py (secrets, not shown)" in out and PASSWORD not in out
    secrets = (micropython_board.root / "precast_secrets.py").read_text()
    assert "'home'" not in secrets and '"home"' in secrets and repr(KEY) in secrets


def _board_files(board: MicropythonBoard) -> dict[str, bytes]:
    return {
        p.relative_to(board.root).as_posix(): p.read_bytes()
        for p in sorted(board.root.rglob("*"))
        if p.is_file() and p.name != "precast_seq"  # the firmware's own, rewritten as it runs
    }


def test_deploy_mpy_replaces_sources_and_a_ctrl_c_leaves_no_half_bundle(
    micropython_board: MicropythonBoard, precast_collector: PrecastCollector
) -> None:
    common = dict(collector=precast_collector.address, interval_ms=0, count=5)
    micropython_board.deploy(TEMPLATES / "minimal.toml", 11, **common)
    assert (micropython_board.root / "precast_fw" / "app.py").exists()
    precast_collector.wait_for_readings(5, device=11, timeout=20)
    before = _board_files(micropython_board)

    # Ctrl-C (SIGINT) once the first file of the --mpy bundle is copied: each file's line came
    # while deploy ran (progress), and the board keeps its whole .py bundle: no app.mpy beside
    # app.py, no staged .part file; one line says so, and how to finish.
    cmd = [*_PRECAST, "deploy", "--port", micropython_board.port, str(TEMPLATES / "minimal.toml"),
           "--device", "12", "--mpy", "--collector", precast_collector.address,
           "--interval-ms", "0", "--count", "5"]  # fmt: skip
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert run.stdout is not None
    seen = []
    for line in run.stdout:
        seen.append(line)
        if line.startswith("copied"):
            assert run.poll() is None, "the copied line came only at the end"
            run.send_signal(signal.SIGINT)
            break
    rest, err = run.communicate(timeout=30)
    assert run.returncode == 130, "".join(seen) + rest + err
    assert "Traceback" not in rest + err and "deployed to" not in rest
    assert err.splitlines() == [
        "precast: interrupted: nothing was installed: the board keeps the files it had, and "
        "was reset to run them; run the same deploy again to finish"
    ], err
    assert _board_files(micropython_board) == before

    out = micropython_board.deploy(TEMPLATES / "minimal.toml", 12, mpy=True, **common)
    fw = micropython_board.root / "precast_fw"
    # A stale app.py would shadow app.mpy on import: deploy removes it, and the top-level
    # modules' .py too.
    assert (fw / "app.mpy").exists() and not (fw / "app.py").exists()
    assert "removed    precast_fw/app.py" in out
    assert not list(micropython_board.root.glob("precast_template*.py"))
    assert not list(micropython_board.root.rglob("*.part"))
    precast_collector.wait_for_readings(5, device=12, timeout=20)


# The CLI run in-process in a child that times main() itself: interpreter start-up and imports,
# slow on a loaded machine, are not part of what "fails fast" means.
_TIMED = """
import sys, time
from precast.cli import main
t = time.monotonic()
try:
    rc = main(sys.argv[2:])
except SystemExit as e:
    rc = e.code
open(sys.argv[1], "w").write(str(time.monotonic() - t))
sys.exit(rc)
"""


def _deploy_cli(port: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """deploy's result, and the seconds main() took (start-up left out)."""
    with tempfile.TemporaryDirectory() as d:
        took = Path(d) / "took"
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                _TIMED,
                str(took),
                "deploy",
                "--port",
                port,
                str(TEMPLATES / "minimal.toml"),
                "--device",
                "1",
                "--collector",
                "127.0.0.1",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return r, float(took.read_text())


def _one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("precast: error: "), r.stderr
    return lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fake_board() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server that answers everything with garbage, as a board without MicroPython."""
    srv = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(0.2)
                while not stop.is_set():
                    try:
                        data = conn.recv(1024)
                    except TimeoutError:
                        continue
                    if not data:
                        break
                    got.append(data)
                    conn.sendall(b"\xff\xfe rst:0x1 (POWERON_RESET) garbage\r\n>>")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], got
    stop.set()
    t.join(timeout=5)
    srv.close()


def test_deploy_to_nothing_fails_fast_in_one_line() -> None:
    r, took = _deploy_cli(f"socket://127.0.0.1:{_free_port()}")
    assert "cannot open" in _one_line_error(r)
    assert took < CONNECT_TIMEOUT_S  # refused at once: no waiting for the connect timeout


def test_deploy_to_a_board_without_micropython(fake_board: tuple[int, list[bytes]]) -> None:
    port, got = fake_board
    r, took = _deploy_cli(f"socket://127.0.0.1:{port}", "--timeout", "2")
    assert "no MicroPython raw REPL answered" in _one_line_error(r)
    assert got, "deploy never spoke to the fake board"
    assert 2 <= took < 2 + 1 + 3  # waited --timeout (and its 1 s grace), then gave up


def test_monitor_shows_the_console(micropython_board: MicropythonBoard) -> None:
    mon = subprocess.Popen(
        [sys.executable, "-m", "precast.cli", "monitor", "--port", micropython_board.port],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert mon.stdin is not None and mon.stdout is not None
    try:
        mon.stdin.write(b"\x03\r")  # stop whatever runs, get a prompt
        mon.stdin.write(b"print(6 * 7 * 1000)\r")
        mon.stdin.flush()
        seen = b""
        deadline = time.monotonic() + 10
        while b"42000" not in seen and time.monotonic() < deadline:
            seen += mon.stdout.read1(4096)
        assert b"42000" in seen
        mon.stdin.write(b"\x1d")  # Ctrl-] quits
        mon.stdin.flush()
        assert mon.wait(timeout=10) == 0
    finally:
        if mon.poll() is None:
            mon.kill()
            mon.wait()


def test_deploy_shows_a_board_that_crashes_on_boot_and_fails(
    micropython_board: MicropythonBoard,
) -> None:
    """The first-hour trap: a bundle whose sensor the board lacks looked deployed."""
    r = subprocess.run(
        [
            *_PRECAST,
            "deploy",
            "--port",
            micropython_board.port,
            str(TEMPLATES / "env-node.toml"),
            "--device",
            "7",
            "--collector",
            "127.0.0.1:9",
            "--sensor",
            "bme280",  # the unix port has no machine.I2C: main.py raises at start
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "board reset" in r.stdout
    assert "| Traceback (most recent call last)" in r.stdout  # the board's own lines
    assert "precast: error: the board failed after the reset: OSError: " in r.stderr
    assert "I2C" in r.stderr and "Traceback" not in r.stderr


def _in_a_terminal(cmd: list[str], timeout: float = 60) -> tuple[int, str, str]:
    """Run cmd with its stdout on an 80x24 pty, as in a terminal: status, what the terminal
    got (escape sequences and all), stderr."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    run = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env | {"TERM": "xterm"},
    )
    os.close(slave)
    got = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the command ended and the pty's other side is closed
            break
        if not data:
            break
        got += data
    os.close(master)
    assert run.stderr is not None
    err = run.stderr.read().decode()
    return run.wait(timeout=10), got.decode(errors="replace"), err


def test_deploy_in_a_terminal_shows_each_copy_and_the_boards_first_lines(
    micropython_board: MicropythonBoard,
) -> None:
    """On a terminal a live line says what deploy does (each file's bytes as they go, the
    watch) under the lines it keeps; the kept lines are the ones a pipe gets."""
    status, screen, err = _in_a_terminal(
        [*_PRECAST, "deploy", "--port", micropython_board.port, str(TEMPLATES / "minimal.toml"),
         "--device", "7", "--collector", "127.0.0.1:9", "--count", "3", "--interval-ms", "0"]
    )  # fmt: skip
    assert status == 0, screen + err
    # the live line: app.py (11 KB) in 2 KB chunks, then the watch
    assert re.search(r"copying precast_fw/app\.py \(\d+ of \d+\).* 2,048/[\d,]+ bytes", screen)
    assert "watching the board: " in screen
    # what stays on the screen, each line whole: the live line is redrawn after "\r", ESC[2K
    shown = re.split(r"[\r\n]+", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen))
    assert any(ln.startswith("copied     precast_fw/app.py (") for ln in shown)
    assert "the board's readings go to 127.0.0.1:9" in shown
    assert "| precast: readings 3 " in screen  # main.py's own summary line, from the board


def test_a_serial_port_without_permission_names_the_group_and_the_fix(tmp_path: Path) -> None:
    import os
    import pty
    import shutil

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to run deploy as another user")
    master, slave = pty.openpty()
    try:
        dev = os.ttyname(slave)
        os.chown(dev, 0, grp_id("dialout"))
        os.chmod(dev, 0o660)
        r = subprocess.run(
            [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                *_PRECAST,
                "monitor",
                "--port",
                dev,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        os.close(slave)
        os.close(master)
    line = _one_line_error(r)
    assert "permission denied" in line and "group 'dialout'" in line, line
    assert "sudo usermod -aG dialout nobody" in line


def _serial_errors(port: str, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """What `precast bridge`, `monitor` and `deploy` say on stderr when `port` will not open
    (run in this process: no start-up per command)."""
    from precast.cli import main

    commands = {
        "bridge": ["bridge", "--serial", port, "--udp", "127.0.0.1:9", "--idle", "1"],
        "monitor": ["monitor", "--port", port],
        "deploy": ["deploy", "--port", port, str(TEMPLATES / "minimal.toml"), "--device", "1",
                   "--collector", "127.0.0.1"],
    }  # fmt: skip
    said = {}
    for name, argv in commands.items():
        capsys.readouterr()
        assert main(argv) == 2, name
        said[name] = capsys.readouterr().err
    return said


@pytest.mark.parametrize("problem", ["missing", "busy", "refused"])
def test_a_serial_port_that_will_not_open_is_the_same_line_in_every_command(
    problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import fcntl
    import os
    import pty

    if problem == "missing":
        said = _serial_errors("/dev/ttyUSB77", capsys)
        expected = (
            "precast: error: serial port /dev/ttyUSB77: no such device (is the board plugged in? "
            "`ls /dev/ttyUSB* /dev/ttyACM*`)\n"
        )
    elif problem == "refused":  # a board over the network that is not there
        url = f"socket://127.0.0.1:{_free_port()}"
        said = _serial_errors(url, capsys)
        expected = f"precast: error: serial port {url}: cannot open: connection refused\n"
    else:  # a port another program holds, locked as pyserial's exclusive open locks it
        master, slave = pty.openpty()
        dev = os.ttyname(slave)
        holder = os.open(dev, os.O_RDWR | os.O_NOCTTY)
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            said = _serial_errors(dev, capsys)
        finally:
            for fd in (holder, slave, master):
                os.close(fd)
        expected = (
            f"precast: error: serial port {dev}: the port is busy: another program "
            "(a monitor, mpremote, a bridge) has it\n"
        )
    assert said == {"bridge": expected, "monitor": expected, "deploy": expected}


def grp_id(name: str) -> int:
    import grp

    return grp.getgrnam(name).gr_gid


_PRECAST = [sys.executable, "-m", "precast.cli"]


def test_a_host_and_port_as_the_serial_device_suggests_socket() -> None:
    """`--port 127.0.0.1:5000` is no serial device: the error names socket:// (the board
    server's URL), as mpremote and pyserial take it."""
    r = subprocess.run(
        [*_PRECAST, "deploy", "--port", "127.0.0.1:5000", str(TEMPLATES / "minimal.toml"),
         "--device", "1", "--collector", "127.0.0.1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "a board over the network is socket://127.0.0.1:5000" in _one_line_error(r)
