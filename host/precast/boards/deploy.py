"""Putting a bundle on a board and watching it: `precast deploy` and `precast monitor`.

`precast deploy --port PORT TEMPLATE --device N ...` builds the bundle `precast build`
makes (with every one of its options) into a temporary directory, then talks to the board
through mpremote's SerialTransport (any port precast.serialport names: /dev/ttyUSB0,
socket://HOST:PORT, rfc2217://HOST:PORT, auto, u0): it interrupts what runs, soft-resets
into the raw REPL, asks the board for the SHA-256 of every file of the bundle in one go,
writes only the files that differ, removes firmware files the bundle no longer has (a stale
.py would shadow a new .mpy), and hard-resets the board so that main.py runs.

Secrets never enter the bundle: the AES key (--key or --key-file) and the WiFi credentials
(--wifi-ssid, --wifi-password-file) go into `precast_secrets.py`, written on the board only
(KEY, WIFI_SSID, WIFI_PASSWORD); the bundle's precast_config.py imports KEY from it. The
listing deploy prints names that file but never its contents.

`precast monitor --port PORT` relays the board's console to this terminal (Ctrl-] quits).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import io
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from precast.args import examples
from precast.errors import BoardError, UsageError
from precast.serialport import cannot_open, open_serial, resolve_port

CONNECT_TIMEOUT_S = 5.0  # a board answers the raw REPL well within this after a soft reset
WATCH_S = 3.0  # after the reset: long enough for a boot, a WiFi join and the first readings
IO_TIMEOUT_S = 10.0  # longest wait for any one read once the board answered
CHUNK = 2048  # bytes per exec writing a file on the board (up to 8 KB of source as repr)
SECRETS_FILE = "precast_secrets.py"
# Bundle files that replace each other by suffix: only the bundle's kind may stay.
_TOP_MODULES = ("precast_template", "precast_config")
_FIRMWARE_DIR = "precast_fw"
_QUIT = b"\x1d"  # Ctrl-]

_HASHES = """\
import os
try:
    import hashlib
    hashlib.sha256
except (ImportError, AttributeError):
    hashlib = None
def _h(p):
    if hashlib is None:
        return "?"
    try:
        f = open(p, "rb")
    except OSError:
        return None
    h = hashlib.sha256()
    b = memoryview(bytearray(512))
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(b[:n])
    f.close()
    return "".join("%02x" % x for x in h.digest())
def _walk(d):
    try:
        es = list(os.ilistdir(d))
    except OSError:
        return
    for e in es:
        p = d + "/" + e[0]
        if e[1] == 0x4000:
            _walk(p)
        else:
            print(repr(("f", p)))
for p in PATHS:
    print(repr(("h", p, _h(p))))
_walk("precast_fw")
"""


def _bundle_config(secret_key: bool) -> str:
    """precast_config.py's last lines: the key, from the secrets file on the board."""
    if not secret_key:
        return "KEY = None\n"
    return "from precast_secrets import KEY  # written by precast deploy, never in the bundle\n"


def secrets_source(key: bytes | None, ssid: str | None, password: str | None) -> bytes:
    """The text of precast_secrets.py."""
    lines = [
        '"""Written by precast deploy: this board\'s secrets. Never copy it off the board."""',
        f"KEY = {key!r}",
        f"WIFI_SSID = {ssid!r}",
        f"WIFI_PASSWORD = {password!r}",
    ]
    return ("\n".join(lines) + "\n").encode()


@contextlib.contextmanager
def deadline(seconds: float, message: str) -> Iterator[None]:
    """Raise BoardError(message) if the block takes longer (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expired(signum: int, frame: FrameType | None) -> None:
        raise BoardError(message)

    old = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


TRACEBACK = b"Traceback (most recent call last)"


class ReplConnection:
    """A MicroPython board behind a port, in its raw REPL (mpremote's SerialTransport)."""

    def __init__(self, port: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
        from mpremote.transport import TransportError
        from serial import SerialException

        port = resolve_port(port)
        self.port = port
        self.transport: Any = None
        quiet = io.StringIO()  # mpremote prints what it got when the REPL does not answer
        try:
            with (
                deadline(timeout + 1, f"{port}: no answer from MicroPython in {timeout:g} s"),
                contextlib.redirect_stdout(quiet),
            ):
                from mpremote.transport_serial import SerialTransport

                self.transport = SerialTransport(port, baudrate=115200)
                self.transport.serial.timeout = IO_TIMEOUT_S
                self.transport.enter_raw_repl(soft_reset=True, timeout_overall=timeout)
        except TransportError as e:
            self.close()
            why = str(e.args[0]) if e.args else str(e)
            if why.startswith("failed to access"):  # mpremote drops pyserial's reason
                raise cannot_open(port) from None
            if why.startswith("could not enter raw repl"):
                why = f"no MicroPython raw REPL answered in {timeout:g} s"
            raise BoardError(f"{port}: {why}") from None
        except (SerialException, OSError, ValueError) as e:
            self.close()
            raise cannot_open(port, e) from None
        except BaseException:
            self.close()
            raise

    def exec(self, code: str) -> bytes:
        """Run code in the raw REPL; its output."""
        from mpremote.transport import TransportError, TransportExecError

        try:
            out: bytes = self.transport.exec(code)
            return out
        except TransportExecError as e:
            last = e.error_output.strip().splitlines()[-1:] or ["?"]
            raise BoardError(f"{self.port}: the board said: {last[0]}") from None
        except (TransportError, OSError) as e:
            raise BoardError(f"{self.port}: lost the board: {e}") from None

    def hashes(self, paths: list[str]) -> tuple[dict[str, str | None], list[str]]:
        """SHA-256 (hex, None when missing, "?" when the board cannot hash) of each path,
        and every file under precast_fw/ on the board."""
        out = self.exec(f"PATHS = {paths!r}\n" + _HASHES)
        digests: dict[str, str | None] = {}
        firmware: list[str] = []
        for line in out.decode(errors="replace").splitlines():
            try:
                item = ast.literal_eval(line.strip())
            except (ValueError, SyntaxError):
                continue
            if item[0] == "h":
                digests[item[1]] = item[2]
            elif item[0] == "f":
                firmware.append(item[1])
        return digests, firmware

    def write(self, path: str, data: bytes) -> None:
        """Write a file on the board: one exec per CHUNK bytes, each opening and closing it."""
        for i in range(0, max(len(data), 1), CHUNK):
            mode = "ab" if i else "wb"
            self.exec(f"with open({path!r}, {mode!r}) as f:\n f.write({data[i : i + CHUNK]!r})")

    def reset(self) -> None:
        """Hard-reset the board (machine.reset()), as `mpremote reset` does."""
        from mpremote.transport import TransportError

        try:
            self.transport.exec_raw_no_follow(
                "import time, machine; time.sleep_ms(100); machine.reset()"
            )
        except (TransportError, OSError) as e:
            raise BoardError(f"{self.port}: reset failed: {e}") from None

    def watch(self, seconds: float, max_lines: int = 20) -> list[str]:
        """What the board prints in the first seconds after a reset, as lines.

        Reads the port until `seconds` pass, or sooner once the board has printed a
        traceback or is back at the REPL prompt and has been quiet for half a second.
        """
        serial = self.transport.serial
        serial.timeout = 0.1
        buf = bytearray()
        end = time.monotonic() + seconds
        quiet_since = time.monotonic()
        while time.monotonic() < end and buf.count(b"\n") < 200:
            try:
                data = serial.read(4096)
            except OSError:  # a USB board re-enumerates on reset: take what came
                break
            now = time.monotonic()
            if data:
                buf += data
                quiet_since = now
            elif now - quiet_since > 0.5 and (TRACEBACK in buf or buf.endswith(b">>> ")):
                break  # failed, or main.py ended (a --count run) and the REPL is back
        if buf.startswith(b"OK"):  # the raw REPL's answer to the reset command
            del buf[:2]
        text = buf.replace(b"\x04", b"").decode(errors="replace")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if TRACEBACK.decode() in text:  # show the whole traceback, however late it came
            at = max(i for i, ln in enumerate(lines) if TRACEBACK.decode() in ln)
            return [*lines[: max(0, max_lines - (len(lines) - at))], *lines[at:]][-max_lines:]
        return lines[:max_lines]

    def close(self) -> None:
        """Leave the raw REPL and let go of the port."""
        if self.transport is None:
            return
        with contextlib.suppress(Exception):
            self.transport.close()
        self.transport = None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle_files(out: Path, written: list[Path]) -> dict[str, bytes]:
    """The bundle as board path -> bytes, in build's order."""
    files: dict[str, bytes] = {}
    for p in written:
        files[p.relative_to(out).as_posix()] = p.read_bytes()
    return files


def _prepare(args: argparse.Namespace, out: Path) -> tuple[dict[str, bytes], bytes | None]:
    """Build into `out`; the files to put on the board and the secrets file (or None)."""
    from precast.boards.build import (
        build_bundle,
        bundle_layout,
        config_entries,
        config_source,
        key_of,
        read_secret_file,
    )

    if (args.wifi_ssid is None) != (args.wifi_password_file is None):
        raise UsageError("--wifi-ssid and --wifi-password-file go together")
    if getattr(args, "secrets", None) and args.wifi_ssid is not None:
        raise UsageError("give --secrets FILE or --wifi-ssid/--wifi-password-file, not both")
    key = key_of(args)
    password = None
    if args.wifi_password_file is not None:
        password = read_secret_file(args.wifi_password_file, "WiFi password")
    options = argparse.Namespace(**vars(args))
    options.key, options.key_file = key, None  # read once, here
    options.out = str(out)
    written = build_bundle(options)
    # The key stays out of the bundle: precast_config (kept as source, it is small) imports
    # it from the secrets file.
    entries = config_entries(options, bundle_layout(options))
    del entries["KEY"]
    cfg = out / "precast_config.py"
    (out / "precast_config.mpy").unlink(missing_ok=True)
    cfg.write_text(config_source(entries) + _bundle_config(key is not None))
    written = [p for p in written if p.stem != "precast_config"] + [cfg]
    files = bundle_files(out, written)
    secrets = None
    if key is not None or args.wifi_ssid is not None:
        secrets = secrets_source(key, args.wifi_ssid, password)
    copied = out / SECRETS_FILE  # build --secrets FILE put the user's own file there
    if getattr(args, "secrets", None) and copied.exists():
        text = copied.read_text().rstrip("\n") + "\n"
        if key is not None:
            text += f"KEY = {key!r}\n"
        secrets = text.encode()
    return files, secrets


def deploy(board: ReplConnection, files: dict[str, bytes], secrets: bytes | None) -> list[str]:
    """Copy what differs, remove stale firmware files, reset; the listing, one line a file."""
    wanted = dict(files)
    if secrets is not None:
        wanted[SECRETS_FILE] = secrets
    stale_top = [
        f"{m}{ext}" for m in _TOP_MODULES for ext in (".py", ".mpy") if f"{m}{ext}" not in files
    ]
    digests, on_board = board.hashes([*wanted, *stale_top])
    dirs = sorted({str(Path(p).parent) for p in wanted if "/" in p}, key=len)
    if dirs:
        board.exec(
            "import os\n"
            f"for d in {dirs!r}:\n"
            "    try:\n        os.mkdir(d)\n    except OSError:\n        pass\n"
        )
    listing = []
    for path, data in wanted.items():
        same = digests.get(path) == _sha(data)
        if not same:
            board.write(path, data)
        what = "unchanged" if same else "copied"
        size = "secrets, not shown" if path == SECRETS_FILE else f"{len(data)} bytes"
        listing.append(f"{what:<10} {path} ({size})")
    gone = [p for p in stale_top if digests.get(p) not in (None, "?")]
    gone += [p for p in on_board if p not in wanted]
    for path in gone:
        board.exec(f"import os\nos.remove({path!r})")
        listing.append(f"{'removed':<10} {path}")
    board.reset()
    return listing


def cmd_deploy(args: argparse.Namespace) -> int:
    from precast.boards.build import bundle_layout, describe_destination, raw_defaults

    keep = args.out
    with tempfile.TemporaryDirectory(prefix="precast-deploy-") as tmp:
        out = Path(keep) if keep else Path(tmp)
        files, secrets = _prepare(args, out)
        board = ReplConnection(args.port, timeout=args.timeout)
        try:
            listing = deploy(board, files, secrets)
            shown = board.watch(args.watch) if args.watch > 0 else []
        finally:
            board.close()
    for line in listing:
        print(line)
    copied = sum(1 for line in listing if line.startswith("copied"))
    print(f"deployed to {args.port}: {len(listing)} files, {copied} copied; board reset")
    lay = bundle_layout(args)
    print(f"the board's {describe_destination(args, lay)}")
    for line in raw_defaults(args, lay):
        print(f"warning: {line}")
    if args.watch > 0:
        print(f"the board's first {args.watch:g} s:" if shown else "the board printed nothing")
        for line in shown:
            print(f"  | {line}")
    failure = _traceback_error(shown)
    if failure is not None:
        print(f"precast: error: the board failed after the reset: {failure}", file=sys.stderr)
        return 1
    return 0


def _traceback_error(lines: list[str]) -> str | None:
    """The error line of the last traceback in lines ('OSError: ...'), or None."""
    at = [i for i, ln in enumerate(lines) if TRACEBACK.decode() in ln]
    if not at:
        return None
    for ln in lines[at[-1] + 1 :]:
        if not ln.startswith((" ", "\t")):
            return ln.strip()
    return "a traceback"


# ---- monitor -------------------------------------------------------------------------------


def cmd_monitor(args: argparse.Namespace) -> int:
    import serial

    link = open_serial(args.port, timeout=0.05)
    tty = sys.stdin.isatty()
    out = sys.stdout.buffer
    done = threading.Event()
    failed: list[str] = []

    def show() -> None:
        try:
            while not done.is_set():
                data = link.read(4096)
                if data:
                    # The terminal is raw here: a lone LF from the unix port gets its CR.
                    if tty:
                        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                    out.write(data)
                    out.flush()
        except (serial.SerialException, OSError) as e:
            failed.append(str(e))
            done.set()

    reader = threading.Thread(target=show, daemon=True)
    if tty:
        print(f"precast monitor: {args.port} (Ctrl-] quits)", file=sys.stderr, flush=True)
    reader.start()
    with _raw_terminal(tty):
        stdin = sys.stdin.fileno()
        while not done.is_set():
            try:
                data = os.read(stdin, 1024)
            except OSError:
                break
            if not data:  # stdin ended: keep showing until the board goes or a signal
                done.wait()
                break
            cut = data.find(_QUIT)
            if cut >= 0:
                data = data[:cut]
            if data:
                try:
                    link.write(data)
                except (serial.SerialException, OSError) as e:
                    failed.append(str(e))
                    break
            if cut >= 0:
                break
    done.set()
    reader.join(timeout=1)
    link.close()
    if failed:
        raise BoardError(f"{args.port}: {failed[0]}")
    return 0


@contextlib.contextmanager
def _raw_terminal(tty: bool) -> Iterator[None]:
    if not tty:
        yield
        return
    import termios
    import tty as ttymod

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    ttymod.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# ---- registration --------------------------------------------------------------------------


def add_deploy_arguments(p: argparse.ArgumentParser) -> None:
    """precast build's options plus the board's port and the secrets."""
    from precast.boards.build import add_build_arguments

    add_build_arguments(p)
    for action in p._actions:
        if action.dest == "out":
            action.required = False
            action.help = "also keep the bundle in DIR (default: a temporary directory)"
    p.add_argument(
        "--port",
        required=True,
        help="the board: a serial device, socket://HOST:PORT, rfc2217://HOST:PORT, or "
        "mpremote's auto, a0, u0, c0",
    )
    p.add_argument("--wifi-ssid", metavar="S", help="WiFi network the board joins")
    p.add_argument("--wifi-password-file", metavar="F", help="file holding the WiFi password")
    p.add_argument(
        "--timeout",
        type=float,
        default=CONNECT_TIMEOUT_S,
        metavar="S",
        help=f"how long the board has to answer (default {CONNECT_TIMEOUT_S:g} s)",
    )
    p.add_argument(
        "--watch",
        type=float,
        default=WATCH_S,
        metavar="S",
        help=f"after the reset, show what the board prints for S seconds and exit 1 if it "
        f"printed a traceback (default {WATCH_S:g}; 0: do not wait)",
    )


def register(subparsers: Any) -> None:
    """Add `precast deploy` and `precast monitor`."""
    d = subparsers.add_parser(
        "deploy",
        help="build a board's bundle and copy what changed to it with mpremote, then reset it",
        description="Build the bundle (every option of precast build) and copy the files whose "
        "SHA-256 differs to the board at PORT, then hard-reset it so main.py runs. The key and "
        "WiFi password go into precast_secrets.py on the board only.",
        epilog=examples(
            "precast deploy --port /dev/ttyUSB0 templates/env-node.toml --device 7 --collector "
            "192.168.1.10 --sensor bme280,battery --wifi-ssid lab --wifi-password-file "
            "~/.wifi-password",
            "precast deploy --port socket://127.0.0.1:5000 templates/env-node.toml --device 7 "
            "--collector 127.0.0.1 --count 10",
        ),
    )
    add_deploy_arguments(d)
    d.set_defaults(func=cmd_deploy)

    m = subparsers.add_parser(
        "monitor",
        help="show a board's console (Ctrl-] quits)",
        description="Relay the board's console at PORT to this terminal, and keys back. "
        "Ctrl-] quits.",
        epilog=examples(
            "precast monitor --port /dev/ttyUSB0",
            "precast monitor --port socket://127.0.0.1:5000",
        ),
    )
    m.add_argument(
        "--port",
        required=True,
        help="the board: a serial device, socket://HOST:PORT, rfc2217://HOST:PORT, or "
        "mpremote's auto, a0, u0, c0",
    )
    m.set_defaults(func=cmd_monitor)
