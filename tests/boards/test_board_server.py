"""The virtual board (`precast board`) behaves as a USB board does, judged by the real mpremote
CLI: its filesystem commands, exec/run, soft and hard resets, main.py at boot, Ctrl-C."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from precast.pytest_plugin import MicropythonBoard


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _read_until(sock: socket.socket, marker: bytes, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {marker!r} in {data[-300:]!r}")
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed before {marker!r}: {data[-300:]!r}")
        data += chunk
    return data


def test_fs_commands_use_the_root(micropython_board: MicropythonBoard, tmp_path: Path) -> None:
    src = tmp_path / "hello.py"
    blob = bytes(range(256)) * 9  # every byte value, several chunks
    src.write_text("print('hello from', __name__)\n")
    (tmp_path / "blob.bin").write_bytes(blob)
    b = micropython_board
    b.mpremote("fs", "mkdir", ":lib")
    b.mpremote(
        "fs",
        "cp",
        str(src),
        ":lib/hello.py",
        "+",
        "fs",
        "cp",
        str(tmp_path / "blob.bin"),
        ":/blob.bin",
    )
    assert (b.root / "lib" / "hello.py").read_text() == src.read_text()
    assert (b.root / "blob.bin").read_bytes() == blob
    listing = b.mpremote("fs", "ls", ":")
    assert "lib/" in listing and f"{len(blob)} blob.bin" in listing
    # And back: a board's file read by mpremote is the host file, byte for byte.
    back = tmp_path / "back.bin"
    b.mpremote("fs", "cp", ":blob.bin", str(back))
    assert back.read_bytes() == blob
    # "/" is the board's root, not the host's; lib/ is on sys.path as on a board.
    out = b.exec("import os\nprint(os.getcwd(), sorted(os.listdir('/')))")
    assert out.split() == ["/", "['blob.bin',", "'lib']"]
    out = b.exec("open('/made.txt', 'w').write('x')\nimport hello")
    assert (b.root / "made.txt").read_text() == "x"
    assert out.strip() == "hello from hello"
    assert b.mpremote("run", str(src)).strip() == "hello from __main__"
    b.mpremote("fs", "rm", ":made.txt")
    assert not (b.root / "made.txt").exists()


def test_soft_reset_restarts_the_interpreter(micropython_board: MicropythonBoard) -> None:
    b = micropython_board
    b.mpremote("exec", "marker = 41")
    # `resume` skips mpremote's soft reset: the same interpreter still has the marker.
    assert b.mpremote("resume", "exec", "print(marker + 1)").strip() == "42"
    # A soft reset (Ctrl-D in the raw REPL) starts a fresh one, as a board does.
    out = b.mpremote("soft-reset", "resume", "exec", "print('marker' in globals())")
    assert out.strip() == "False"


def test_soft_reboot_banner_on_the_wire(micropython_board: MicropythonBoard) -> None:
    with socket.create_connection((micropython_board.host, micropython_board.tcp_port)) as s:
        s.sendall(b"\r\x03\r\x01")
        _read_until(s, b"raw REPL; CTRL-B to exit\r\n>")
        s.sendall(b"\x04")  # Ctrl-D on an empty raw REPL: soft reset
        out = _read_until(s, b"raw REPL; CTRL-B to exit\r\n>")
        assert b"MPY: soft reboot\r\n" in out
        s.sendall(b"\x02")  # to the friendly REPL
        out = _read_until(s, b">>> ")
        assert b"MicroPython" in out
        s.sendall(b"6 * 7\r")
        assert b"42" in _read_until(s, b"42")


def test_reset_runs_main_and_ctrl_c_stops_it(
    micropython_board: MicropythonBoard, tmp_path: Path
) -> None:
    b = micropython_board
    main = tmp_path / "main.py"
    # Counts its boots in a file, then loops forever as a sender does.
    main.write_text(
        "try:\n    n = int(open('boots').read())\nexcept OSError:\n    n = 0\n"
        "open('boots', 'w').write(str(n + 1))\n"
        "spins = 0\nwhile True:\n    spins += 1\n"
    )
    b.mpremote("fs", "cp", str(main), ":main.py")
    boots = b.root / "boots"
    assert not boots.exists()  # a soft reset in the raw REPL does not run main.py
    b.mpremote("reset")  # machine.reset(): a hard reset runs main.py
    assert _wait_for(lambda: boots.exists() and boots.read_text() == "1")
    # mpremote's Ctrl-C stops main.py; its globals stay for the REPL, as on a board.
    t0 = time.monotonic()
    assert b.mpremote("resume", "exec", "print(spins > 0)").strip() == "True"
    assert time.monotonic() - t0 < 10
    b.mpremote("exec", "pass")  # soft reset into the raw REPL: main.py does not run
    b.mpremote("reset")
    assert _wait_for(lambda: boots.read_text() == "2")


def test_a_new_client_takes_over(micropython_board: MicropythonBoard) -> None:
    b = micropython_board
    stale = socket.create_connection((b.host, b.tcp_port))
    try:
        stale.sendall(b"\r\x01")  # left in the raw REPL, never closed
        assert b.exec("print(1 + 1)").strip() == "2"
        stale.settimeout(5)
        assert _wait_for(lambda: _closed(stale))
    finally:
        stale.close()


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


@pytest.mark.parametrize("code", ["print(undefined_name)"])
def test_errors_come_back_as_mpremote_errors(
    micropython_board: MicropythonBoard, code: str
) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", micropython_board.port, "exec", code],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert "NameError" in r.stdout + r.stderr


def test_mpremote_mount_serves_host_files(
    micropython_board: MicropythonBoard, tmp_path: Path
) -> None:
    (tmp_path / "hostmod.py").write_text("VALUE = 'from the host'\n")
    code = "import os, hostmod\nprint(hostmod.VALUE, os.getcwd())"
    out = micropython_board.mpremote("mount", str(tmp_path), "exec", code)
    assert "from the host /remote" in out
    assert not (micropython_board.root / "hostmod.py").exists()


def test_board_refusals_are_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for args, why in (
            (["--listen", f"127.0.0.1:{port}", "--root", str(tmp_path)], "in use"),
            (["--listen", "127.0.0.1", "--root", str(tmp_path)], "expected HOST:PORT"),
            (["--root", "/proc/no/such/dir"], "--root"),
        ):
            r = subprocess.run(
                [sys.executable, "-m", "precast.cli", "board", *args],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and why in lines[0], r.stderr


def test_a_missing_root_is_made_and_said(tmp_path: Path) -> None:
    """--root naming a directory that does not exist: made with its parents, as mkdir -p
    would, and said in one line (a typo there is a new, empty board)."""
    import subprocess
    import sys

    root = tmp_path / "a" / "b"
    with socket.create_server(("127.0.0.1", 0)) as taken:  # then refused: no board left running
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "precast.cli", "board", "--root", str(root)]
        r = subprocess.run(
            [*cmd, "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert root.is_dir()
    assert f"precast board: created {root} (the board's filesystem; it did not exist)" in r.stderr
