"""A throwaway PostgreSQL server for the tests and the benchmark: a real cluster, no service.

initdb and pg_ctl from Debian's postgresql package (/usr/lib/postgresql/N/bin),
run as an unprivileged user when we are root (PostgreSQL refuses to run as
root): `nobody`, through setpriv. The cluster lives in a temporary directory
of its own, listens on 127.0.0.1 on a free port (and a Unix socket in its
directory), and is removed by stop(). TCP connections need the password
(scram-sha-256), so a test can check that it never leaks.

No pytest here, so tools/bench/collector.py can start one too.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "precast"
PASSWORD = "pg-test-secret-7f3a"  # a test greps the logs for it


def pg_bin() -> Path | None:
    """The directory holding initdb and pg_ctl, newest version first; None when absent."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version, reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version(path: str) -> int:
    try:
        return int(Path(path).parts[-3])
    except ValueError:
        return 0


def _traversable(path: str) -> bool:
    """Whether every directory down to path lets others through (o+x)."""
    p = Path(path).resolve()
    return all(q.stat().st_mode & 0o001 for q in [p, *p.parents])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PgServer:
    """One PostgreSQL cluster in a temporary directory, on 127.0.0.1:port."""

    def __init__(self, fast: bool = True) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
        self.bin = bindir
        base = tempfile.gettempdir()
        if os.geteuid() == 0 and not _traversable(base):
            base = "/tmp"  # nobody must reach the cluster's directory
        self.dir = Path(tempfile.mkdtemp(prefix="precast-pg-", dir=base))
        self.data = self.dir / "data"
        self.logfile = self.dir / "server.log"
        self.port = free_port()
        self.fast = fast
        self._as: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            self._as = [
                "setpriv",
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
                "--",
            ]
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as:
            os.chown(pwfile, pwd.getpwnam("nobody").pw_uid, -1)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        pwfile.unlink()
        opts = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),
            "max_connections": "50",
            "shared_buffers": "64MB",
        }
        if fast:
            # Tests never crash the machine: durability to disk buys them nothing.
            opts |= {"fsync": "off", "full_page_writes": "off"}
        with open(self.data / "postgresql.auto.conf", "a") as f:
            for k, v in opts.items():
                f.write(f"{k} = '{v}'\n")
        self.start()

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as, str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            check=check,
            cwd=self.dir,
            timeout=60,
        )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (it can be started again)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def running(self) -> bool:
        r = self._run("pg_ctl", "-D", str(self.data), "status", check=False)
        return r.returncode == 0

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str = "postgres", password: bool = True, **params: str) -> str:
        pw = f":{PASSWORD}" if password else ""
        q = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{USER}{pw}@127.0.0.1:{self.port}/{db}" + (f"?{q}" if q else "")

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run SQL with psql (an independent judge); unaligned, tuples only, | separated."""
        r = subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                db,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": PASSWORD},
            timeout=60,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"psql: {r.stderr.strip()}")
        return r.stdout.strip()

    def create_db(self, name: str) -> str:
        """A fresh, empty database; its URL."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}"')
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")
