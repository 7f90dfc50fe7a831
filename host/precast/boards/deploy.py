"""Putting a bundle on a board and watching it: `precast deploy` and `precast monitor`.

`precast deploy --port PORT TEMPLATE --device N ...` builds the bundle `precast build`
makes (with every one of its options) into a temporary directory, then works on the board
through mpremote's SerialTransport and its file primitives (any port precast.serialport
names: /dev/ttyUSB0, socket://HOST:PORT, rfc2217://HOST:PORT, auto, u0), in steps:

1. connect: interrupt what runs, soft-reset into the raw REPL;
2. compare: list the board's files (fs_listdir, with sizes); a file whose size differs is
   copied, one whose size matches is hashed on the board (fs_hashfile, SHA-256);
3. stage: each file that differs is written (fs_writefile) beside its place as NAME.part,
   which no import finds, so the installed bundle stays whole while files are copied;
4. install: one exec removes what the bundle no longer has (firmware modules it dropped,
   and NAME.py where the bundle now has NAME.mpy: the .py would shadow it) and renames each
   NAME.part into place;
5. reset (machine.reset()), after which main.py runs, and show what the board prints.

Ctrl-C (SIGINT) before the install stops after the file being copied, removes the .part
files and resets the board into the files it had; a second Ctrl-C stops at once (a .part
left behind is never imported, and the next deploy removes it). The install, one exec,
is not cut. Whenever it stops, deploy says in one line what the board has and what to run
(exit 130).

Secrets never enter the bundle: the AES key (--key or --key-file) and the WiFi credentials
(--wifi-ssid, --wifi-password-file) go into `precast_secrets.py`, written on the board only
(KEY, WIFI_SSID, WIFI_PASSWORD); the bundle's precast_config.py imports KEY from it. The
listing deploy prints names that file but never its contents.

`precast monitor --port PORT` relays the board's console to this terminal (Ctrl-] quits).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import hashlib
import io
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

from precast.args import examples
from precast.boards.progress import Progress
from precast.errors import BoardError, Interrupted, UsageError
from precast.serialport import cannot_open, open_serial, resolve_port

CONNECT_TIMEOUT_S = 5.0  # a board answers the raw REPL well within this after a soft reset
WATCH_S = 3.0  # after the reset: long enough for a boot, a WiFi join and the first readings
IO_TIMEOUT_S = 10.0  # longest wait for any one read once the board answered
# Bytes per exec of fs_writefile. Its default, 256, copied a 19-file bundle (89 KB) to the
# virtual board in 4.7 s, 2048 in 1.25 s, 4096 in 1.04 s. 2048 bytes of .mpy are up to 8 KB
# of source as a bytes literal, which even a small board's heap compiles.
CHUNK = 2048
PART = ".part"  # a staged file's suffix: no import looks for it
SECRETS_FILE = "precast_secrets.py"
_FIRMWARE_DIR = "precast_fw"
_TWINS = {".py": ".mpy", ".mpy": ".py"}  # one module's two forms: the .py shadows the .mpy
_QUIT = b"\x1d"  # Ctrl-]
_WATCH_LINES = 200  # stop watching a board that prints this many lines


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


# mpremote 1.29's Transport has fs_rmfile but no rename: the install is one exec of its own,
# so that no Ctrl-C and no lost exchange can land between removing a NAME.py and putting
# NAME.mpy in its place. FAT refuses a rename onto an existing file: remove first.
_INSTALL = """\
import os
def _rm(p):
    try:
        os.remove(p)
    except OSError:
        pass
for p in GONE:
    _rm(p)
for p in NEW:
    _rm(p)
    os.rename(p + PART, p)
"""


class BoardFiles(NamedTuple):
    """What the board holds where a bundle goes: file sizes by path, and directories."""

    sizes: dict[str, int]
    dirs: set[str]


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

    @contextlib.contextmanager
    def _talking(self, doing: str) -> Iterator[None]:
        """mpremote's errors as one BoardError: the port, what deploy was doing, and why."""
        from mpremote.transport import TransportError, TransportExecError

        try:
            yield
        except TransportExecError as e:
            last = e.error_output.strip().splitlines()[-1:] or ["?"]
            raise BoardError(f"{self.port}: {doing}: the board said: {last[0]}") from None
        except OSError as e:  # an fs_ primitive's OSError(errno, path), or the port's own
            why = os.strerror(e.errno) if e.errno else str(e)
            raise BoardError(f"{self.port}: {doing}: {why}") from None
        except TransportError as e:
            raise BoardError(f"{self.port}: {doing}: lost the board: {e}") from None

    def files(self, under: set[str]) -> BoardFiles:
        """The files at the top of the board's filesystem and in the directories `under`
        (with theirs), with sizes."""
        sizes: dict[str, int] = {}
        dirs: set[str] = set()
        todo = [""]
        with self._talking("listing its files"):
            while todo:
                d = todo.pop()
                try:
                    entries = self.transport.fs_listdir(d)
                except OSError as e:
                    if e.errno == errno.ENOENT:
                        continue
                    raise
                for entry in entries:
                    path = f"{d}/{entry.name}" if d else entry.name
                    if not entry.st_mode & 0x4000:
                        sizes[path] = entry.st_size
                    elif path in under:
                        dirs.add(path)
                        todo.append(path)
        return BoardFiles(sizes, dirs)

    def digest(self, path: str) -> bytes:
        """The SHA-256 of a file on the board."""
        with self._talking(f"hashing {path}"):
            out: bytes = self.transport.fs_hashfile(path, "sha256")
            return out

    def write(self, path: str, data: bytes, shown: Callable[[int, int], None]) -> None:
        """Write a file on the board; `shown(done, total)` after each chunk."""
        with self._talking(f"writing {path}"):
            self.transport.fs_writefile(path, data, chunk_size=CHUNK, progress_callback=shown)

    def mkdir(self, path: str) -> None:
        """Make a directory on the board."""
        with self._talking(f"making {path}/"):
            self.transport.fs_mkdir(path)

    def remove(self, path: str) -> None:
        """Remove a file from the board."""
        with self._talking(f"removing {path}"):
            self.transport.fs_rmfile(path)

    def install(self, staged: list[str], gone: list[str]) -> None:
        """In one exec: remove `gone`, then move each staged NAME.part to NAME."""
        code = f"GONE = {gone!r}\nNEW = {staged!r}\nPART = {PART!r}\n" + _INSTALL
        with self._talking("installing the copied files"):
            self.transport.exec(code)

    def reset(self) -> None:
        """Hard-reset the board (machine.reset()), as `mpremote reset` does."""
        with self._talking("resetting it"):
            self.transport.exec_raw_no_follow(
                "import time, machine; time.sleep_ms(100); machine.reset()"
            )

    def watch(self, seconds: float, progress: Progress) -> list[str]:
        """Show what the board prints after a reset, line by line as it comes; the lines.

        Reads the port until `seconds` pass, or sooner once the board has printed a
        traceback or is back at the REPL prompt and has been quiet for half a second.
        """
        serial = self.transport.serial
        serial.timeout = 0.1
        seen = bytearray()  # everything, for the stop conditions
        part = bytearray()  # the line not yet ended
        lines: list[str] = []

        def show(raw: bytes | bytearray) -> None:
            text = raw.replace(b"\x04", b"").decode(errors="replace")
            for ln in text.split("\r"):
                if ln.strip():
                    lines.append(ln)
                    progress.line(f"  | {ln}")

        start = time.monotonic()
        quiet_since = start
        while (now := time.monotonic()) < start + seconds and len(lines) < _WATCH_LINES:
            progress.step(f"watching the board: {now - start:.0f} of {seconds:g} s")
            try:
                data = serial.read(4096)
            except OSError:  # a USB board re-enumerates on reset: take what came
                break
            now = time.monotonic()
            if data:
                if not seen and data.startswith(b"OK"):  # the raw REPL's answer to the reset
                    data = data[2:]
                seen += data
                part += data
                *done, rest = part.split(b"\n")
                for raw in done:
                    show(raw)
                part = bytearray(rest)
                quiet_since = now
            elif now - quiet_since > 0.5 and (TRACEBACK in seen or seen.endswith(b">>> ")):
                break  # failed, or main.py ended (a --count run) and the REPL is back
        show(part)
        return lines

    def close(self) -> None:
        """Let go of the port."""
        if self.transport is None:
            return
        with contextlib.suppress(Exception):
            self.transport.close()
        self.transport = None


class StopAsked(Exception):
    """A Ctrl-C asked deploy to stop at its next safe point."""


class CtrlC:
    """SIGINT while the board's files change: the first asks to stop at the next safe point
    (check() raises StopAsked there), a second stops at once (KeyboardInterrupt), for a
    board that stopped answering; while held, it only asks."""

    def __init__(self, asked: Callable[[], None]) -> None:
        self.asked = False
        self.held = False
        self._on_ask = asked
        self._old: Any = None

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.asked and not self.held:
            raise KeyboardInterrupt
        if not self.asked:
            self.asked = True
            self._on_ask()

    def check(self) -> None:
        """Raise StopAsked if a Ctrl-C came."""
        if self.asked:
            raise StopAsked

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """A block no Ctrl-C cuts (it is seen after)."""
        self.held = True
        try:
            yield
        finally:
            self.held = False


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


@dataclass
class Deployed:
    """What a deploy did: the bundle's files copied and unchanged, and the files removed."""

    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _size(path: str, data: bytes) -> str:
    return "secrets, not shown" if path == SECRETS_FILE else f"{len(data)} bytes"


def stale(wanted: dict[str, bytes], on_board: BoardFiles) -> list[str]:
    """The board's files a bundle replaces by other means: firmware modules the bundle has
    no more, a module's other form (NAME.py beside a bundle's NAME.mpy, or the reverse), and
    .part files an interrupted deploy left."""
    twins = {  # precast's modules only: a user's own main.mpy beside main.py stays
        str(Path(p).with_suffix(_TWINS[Path(p).suffix]))
        for p in wanted
        if Path(p).suffix in _TWINS and p.startswith("precast")
    }
    gone = []
    for path in on_board.sizes:
        if path in wanted:
            continue
        firmware = path.startswith(_FIRMWARE_DIR + "/")
        if firmware or path in twins or (path.endswith(PART) and path[: -len(PART)] in wanted):
            gone.append(path)
    return gone


def differs(board: ReplConnection, path: str, data: bytes, on_board: BoardFiles) -> bool:
    """Whether the board's copy of `path` is missing or other than `data`: by size, and by
    SHA-256 where the sizes agree."""
    size = on_board.sizes.get(path)
    if size is None or (size and size != len(data)):  # 0: a port whose ilistdir has no sizes
        return True
    return board.digest(path) != hashlib.sha256(data).digest()


def stage(
    board: ReplConnection,
    wanted: dict[str, bytes],
    on_board: BoardFiles,
    progress: Progress,
    ctrl_c: CtrlC,
    done: Deployed,
) -> None:
    """Write each file that differs as NAME.part (done.copied), stopping between files when
    a Ctrl-C asked; the installed files are not touched."""
    for d in sorted({str(Path(p).parent) for p in wanted if "/" in p}, key=len):
        if d not in on_board.dirs:
            board.mkdir(d)
    n = len(wanted)
    for i, (path, data) in enumerate(wanted.items(), 1):
        ctrl_c.check()
        progress.step(f"comparing {path} ({i} of {n})")
        if not differs(board, path, data, on_board):
            done.unchanged.append(path)
            progress.line(f"{'unchanged':<10} {path} ({_size(path, data)})")
            continue
        what = f"copying {path} ({i} of {n})"
        progress.transfer(what, 0, len(data))
        board.write(path + PART, data, functools.partial(progress.transfer, what))
        done.copied.append(path)
        progress.line(f"{'copied':<10} {path} ({_size(path, data)})")
    ctrl_c.check()


def roll_back(board: ReplConnection, staged: list[str]) -> None:
    """Remove the staged NAME.part files."""
    for path in staged:
        board.remove(path + PART)


def deploy(
    board: ReplConnection, files: dict[str, bytes], secrets: bytes | None, progress: Progress
) -> Deployed:
    """Put the bundle (and the secrets file) on the board and reset it: compare, stage what
    differs, install, reset. Interrupted, raised on Ctrl-C, says what the board has."""
    wanted = dict(files)
    if secrets is not None:
        wanted[SECRETS_FILE] = secrets
    done = Deployed()

    def asked() -> None:
        progress.step("stopping: Ctrl-C (again to stop at once)")

    with CtrlC(asked) as ctrl_c:
        try:
            progress.step("listing the board's files")
            dirs = {str(Path(p).parent) for p in wanted if "/" in p} | {_FIRMWARE_DIR}
            under = {str(q) for d in dirs for q in [Path(d), *Path(d).parents] if str(q) != "."}
            on_board = board.files(under)
            stage(board, wanted, on_board, progress, ctrl_c, done)
            staged = {p + PART for p in done.copied}  # written again this time: kept
            gone = [p for p in stale(wanted, on_board) if p not in staged]
            progress.step("installing")
            with ctrl_c.hold():
                board.install(done.copied, gone)
        except StopAsked:
            try:
                progress.step("removing the files copied so far")
                roll_back(board, done.copied)
                progress.step("resetting the board")
                board.reset()
            except (KeyboardInterrupt, BoardError):
                raise Interrupted(_kept_at_repl(board.port)) from None
            raise Interrupted(
                "nothing was installed: the board keeps the files it had, and was reset to "
                "run them; run the same deploy again to finish"
            ) from None
        except KeyboardInterrupt:  # a second Ctrl-C, in the middle of an exchange
            raise Interrupted(_kept_at_repl(board.port)) from None
        for path in gone:
            done.removed.append(path)
            progress.line(f"{'removed':<10} {path}")
        progress.step("resetting the board")
        board.reset()
    if ctrl_c.asked:
        raise Interrupted(
            "the Ctrl-C came once the new bundle was being installed (one step, not cut): "
            "it is installed, and the board was reset to run it"
        )
    return done


def _kept_at_repl(port: str) -> str:
    return (
        "nothing was installed: the board keeps the files it had (a NAME.part beside them is "
        f"never imported), but it is stopped; run the same deploy again to finish, or reset "
        f"it (`mpremote connect {port} reset`) to run the old files"
    )


def cmd_deploy(args: argparse.Namespace) -> int:
    from precast.boards.build import bundle_layout, describe_destination, raw_defaults
    from precast.boards.progress import progress_for

    with (
        contextlib.closing(progress_for(sys.stdout)) as progress,
        tempfile.TemporaryDirectory(prefix="precast-deploy-") as tmp,
    ):
        out = Path(args.out) if args.out else Path(tmp)
        progress.step("building the bundle" + (" (mpy-cross)" if args.mpy else ""))
        try:
            files, secrets = _prepare(args, out)
            progress.step(f"connecting to {args.port}")
            board = ReplConnection(args.port, timeout=args.timeout)
        except KeyboardInterrupt:
            raise Interrupted(
                "before anything was copied: the board's files are as they were (if it was "
                "stopped, run the deploy again, or reset it)"
            ) from None
        try:
            try:
                done = deploy(board, files, secrets, progress)
            except KeyboardInterrupt:  # before deploy took Ctrl-C over
                raise Interrupted(_kept_at_repl(board.port)) from None
            progress.line(
                f"deployed to {args.port}: {len(done.copied) + len(done.unchanged)} files, "
                f"{len(done.copied)} copied, {len(done.removed)} removed; board reset"
            )
            lay = bundle_layout(args)
            progress.line(f"the board's {describe_destination(args, lay)}")
            for line in raw_defaults(args, lay):
                progress.line(f"warning: {line}")
            shown: list[str] = []
            if args.watch > 0:
                progress.line(f"the board's first {args.watch:g} s (Ctrl-C stops watching):")
                try:
                    shown = board.watch(args.watch, progress)
                except KeyboardInterrupt:
                    raise Interrupted(
                        "stopped watching: the new bundle is installed and the board runs it "
                        f"(`precast monitor --port {args.port}` shows its console)"
                    ) from None
                if not shown:
                    progress.line("  (the board printed nothing)")
        finally:
            board.close()
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
