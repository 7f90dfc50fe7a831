"""MQTT out of the collector: each stored reading, availability, Home Assistant discovery.

The topics (PREFIX is the --mqtt URL's path, default `precast`; DISCOVERY is
--ha-discovery's prefix, default `homeassistant`):

    PREFIX/status                 `online` (retained) while the collector runs, sent after the
                                  devices' availability (a device gone stale while the collector
                                  was away is `offline` first); the MQTT will and a clean stop
                                  leave `offline` (retained)
    PREFIX/<device>/reading       one message per stored reading, the --jsonl object:
                                  {"template", "device", "seq", "received_at", "fields": {...}};
                                  retained, so a new subscriber gets the last one (flag set)
    PREFIX/<device>/availability  `online` (retained) from the device's first reading, `offline`
                                  once it is stale as `precast stats` says, `online` again with
                                  its next reading
    PREFIX/<device>/diagnostics   its counts (retained): {"received", "lost", "loss_pct"}, at
                                  its first tick and then at most every DIAG_EVERY while they
                                  change
    DISCOVERY/...                 Home Assistant's retained discovery configs (discovery.py):
                                  a device's at its first reading and when a reload (SIGHUP)
                                  changed its template, the collector's and every device's
                                  when DISCOVERY/status says `online` and after every
                                  (re)connect; before a device's, empty ones for the fields its
                                  template no longer has (orphans), known from this run and the
                                  store's record of earlier runs (take_configs())

The broker is not the database. The collector's storing thread calls
write(docs) after each committed batch and tick(now) about once a second
(the Sink interface, sinks/__init__.py): both only append to deques and
never wait; tick() reads the devices' sequence state (the tracker's) to find
the stale ones. paho-mqtt's own loop (its thread, loop_start) owns the
connection: it reconnects with reconnect_delay_set's backoff (1 s, doubling to
30 s); its callbacks only note what the broker said. One thread of ours makes
each reading's JSON and hands the messages to paho in order (status,
discovery, availability, then readings), within a share of the CPU.
Readings wait in a bounded buffer while the broker is away; what does not
fit is counted (stats()["dropped"]) and logged once per outage. Status,
availability and discovery go at QoS 1, retained; readings at the
--mqtt-qos. A broker that refuses the credentials (or whose certificate does
not verify) at start() raises MqttError: one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from precast.collect.rows import Row, reading_doc
from precast.collect.sinks import Stored
from precast.collect.sinks.discovery import (
    DEFAULT_PREFIX,
    OFFLINE,
    ONLINE,
    Published,
    collector_configs,
    device_configs,
    diagnostics_doc,
)
from precast.collect.stats import interval_of, is_stale
from precast.errors import PrecastError, UsageError
from precast.wire.layout import Layout

log = logging.getLogger("precast.mqtt")

DEFAULT_DISCOVERY = "homeassistant"
DEFAULT_BUFFER = 10_000  # readings held while the broker is away
BACKOFF_MIN = 1  # s before paho's first reconnect; doubles up to BACKOFF_MAX
BACKOFF_MAX = 30
INFLIGHT = 1000  # QoS 1 messages paho may hold unacknowledged
ROUND = 500  # readings handed to paho per round
# Of the GIL, publishing (our thread and paho's) takes at most this share while it has a
# backlog (ours sleeps the rest): publishing must not slow storing by more than a quarter.
# A faster stream than that share allows fills the buffer and counts drops.
SHARE = 0.2
DIAG_EVERY = 30.0  # s between a device's diagnostics (its loss %) while they change


class MqttError(PrecastError):
    """A broker that refuses the collector at start (credentials, certificate)."""


class DeviceState(Protocol):
    """What tick() needs of a device: the tracker's Device has it."""

    device: int
    template: int
    epoch_seq: int
    epoch_started: float
    highest: int
    last_seen: float
    received: int
    lost: int


class _NotAnError(logging.Filter):
    """paho 2.2 logs `Client is not connected` at ERROR when its loop runs once more after
    our own disconnect() at a clean stop: not an error, so not said."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Client is not connected")


def stale(d: DeviceState, now: float) -> bool:
    """Stale as `precast stats` says (collect/stats.py), from the tracker's state."""
    interval = interval_of(d.highest, d.epoch_seq, d.last_seen, d.epoch_started)
    return is_stale(interval, max(0.0, now - d.last_seen))


# ---- options -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MqttUrl:
    """mqtt://[USER[:PASS]@]HOST[:PORT][/PREFIX], parsed."""

    tls: bool
    host: str
    port: int
    user: str | None
    password: str | None
    prefix: str

    @property
    def where(self) -> str:
        """HOST:PORT as logs say it (never the password)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_url(url: str) -> MqttUrl:
    """Parse an --mqtt URL; UsageError on a bad one."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise UsageError(f"--mqtt {url!r}: {e}") from None
    if u.scheme not in ("mqtt", "mqtts"):
        raise UsageError(
            f"--mqtt {url!r}: expected mqtt://[USER[:PASS]@]HOST[:PORT][/PREFIX] (or mqtts://)"
        )
    if not u.hostname:
        raise UsageError(f"--mqtt {url!r}: no host")
    if u.query or u.fragment:
        raise UsageError(f"--mqtt {url!r}: no ?query or #fragment expected")
    prefix = u.path.strip("/") or DEFAULT_PREFIX
    check_prefix(prefix, "--mqtt")
    tls = u.scheme == "mqtts"
    return MqttUrl(
        tls=tls,
        host=u.hostname,
        port=port or (8883 if tls else 1883),
        user=unquote(u.username) if u.username is not None else None,
        password=unquote(u.password) if u.password is not None else None,
        prefix=prefix,
    )


def check_prefix(prefix: str, flag: str) -> str:
    """A topic prefix: no wildcards, no empty levels."""
    if not prefix or any(c in prefix for c in "+#\0") or "" in prefix.split("/"):
        raise UsageError(f"{flag}: bad topic prefix {prefix!r} (no +, #, or empty levels)")
    return prefix


@dataclass(frozen=True)
class MqttOptions:
    """Everything but the URL: the --mqtt-* flags and --ha-discovery."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    password_file: str | None = None
    qos: int = 0
    client_id: str | None = None
    discovery: str | None = None  # Home Assistant's discovery prefix; None: no discovery
    buffer: int = DEFAULT_BUFFER
    keepalive: int = 30


def _readable(path: str, flag: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise UsageError(f"{flag} {path}: {e.strerror}") from None


def _password(url: MqttUrl, opts: MqttOptions) -> str | None:
    if opts.password_file is None:
        return url.password
    if url.password is not None:
        raise UsageError("--mqtt-password-file: the --mqtt URL has a password already")
    if url.user is None:
        raise UsageError("--mqtt-password-file: the --mqtt URL names no user (mqtt://USER@HOST)")
    try:
        text = Path(opts.password_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--mqtt-password-file {opts.password_file}: {e}") from None
    lines = text.splitlines()
    return lines[0] if lines else ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The --mqtt flags of `precast collect`."""
    g = p.add_argument_group(
        "MQTT and Home Assistant",
        "publish each stored reading, availability and (--ha-discovery) Home Assistant "
        "discovery to an MQTT broker; the database never waits for it",
    )
    g.add_argument(
        "--mqtt",
        metavar="URL",
        help="mqtt://[USER[:PASS]@]HOST[:PORT][/PREFIX] (port 1883, PREFIX precast); "
        "mqtts:// for TLS (port 8883)",
    )
    g.add_argument("--mqtt-ca", metavar="FILE", help="CA certificate(s) of the broker (mqtts)")
    g.add_argument("--mqtt-cert", metavar="FILE", help="client certificate (mqtts)")
    g.add_argument("--mqtt-key", metavar="FILE", help="the client certificate's key (mqtts)")
    g.add_argument("--mqtt-password-file", metavar="F", help="the password: the first line of F")
    g.add_argument("--mqtt-qos", type=int, choices=(0, 1), help="QoS of the readings (default 0)")
    g.add_argument(
        "--mqtt-client-id", metavar="ID", help="MQTT client id (default precast-collect-HOST-PID)"
    )
    g.add_argument(
        "--mqtt-buffer",
        type=int,
        metavar="N",
        help=f"readings held while the broker is away; more are counted as dropped "
        f"(default {DEFAULT_BUFFER})",
    )
    g.add_argument(
        "--ha-discovery",
        nargs="?",
        const=DEFAULT_DISCOVERY,
        metavar="PREFIX",
        help=f"publish Home Assistant discovery configs under PREFIX (default {DEFAULT_DISCOVERY})",
    )


def config_from(args: argparse.Namespace) -> tuple[MqttUrl, MqttOptions] | None:
    """The URL and options from `precast collect`'s flags; None without --mqtt."""
    if args.mqtt is None:
        given = [
            flag
            for flag, v in (
                ("--mqtt-ca", args.mqtt_ca),
                ("--mqtt-cert", args.mqtt_cert),
                ("--mqtt-key", args.mqtt_key),
                ("--mqtt-password-file", args.mqtt_password_file),
                ("--mqtt-client-id", args.mqtt_client_id),
                ("--mqtt-qos", args.mqtt_qos),
                ("--mqtt-buffer", args.mqtt_buffer),
                ("--ha-discovery", args.ha_discovery),
            )
            if v is not None
        ]
        if given:
            raise UsageError(f"{given[0]} needs --mqtt URL")
        return None
    return parse_url(args.mqtt), MqttOptions(
        ca=args.mqtt_ca,
        cert=args.mqtt_cert,
        key=args.mqtt_key,
        password_file=args.mqtt_password_file,
        qos=args.mqtt_qos if args.mqtt_qos is not None else 0,
        client_id=args.mqtt_client_id,
        discovery=args.ha_discovery,
        buffer=args.mqtt_buffer if args.mqtt_buffer is not None else DEFAULT_BUFFER,
    )


# ---- the publisher -------------------------------------------------------------------------


class MqttSink:
    """Publish what the collector stores; see the module docstring for topics and threads."""

    name = "mqtt"

    def __init__(
        self,
        url: str | MqttUrl,
        layouts: Mapping[int, Layout],
        options: MqttOptions,
        devices: Callable[[], Iterable[DeviceState]] | None = None,
        published: Iterable[str] = (),
    ) -> None:
        try:  # the mqtt extra: imported only when asked for
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError:
            raise UsageError("--mqtt needs paho-mqtt 2: pip install 'precast[mqtt]'") from None

        self.url = parse_url(url) if isinstance(url, str) else url
        self.opts = options
        self.prefix = self.url.prefix
        # Collectors sharing a database and publishing under one prefix of one broker share it.
        self.position = f"mqtt_pending:{self.url.where}/{self.prefix}"
        if options.qos not in (0, 1):
            raise UsageError(f"--mqtt-qos must be 0 or 1, got {options.qos}")
        if options.buffer < 1:
            raise UsageError("--mqtt-buffer must be at least 1")
        if options.discovery is not None:
            check_prefix(options.discovery, "--ha-discovery")
        for path, flag in ((options.ca, "--mqtt-ca"), (options.cert, "--mqtt-cert")):
            if path is not None and not self.url.tls:
                raise UsageError(f"{flag} needs an mqtts:// URL")
        if options.key is not None and options.cert is None:
            raise UsageError("--mqtt-key needs --mqtt-cert")
        for path, flag in (
            (options.ca, "--mqtt-ca"),
            (options.cert, "--mqtt-cert"),
            (options.key, "--mqtt-key"),
        ):
            if path is not None:
                _readable(path, flag)
        password = _password(self.url, options)
        self.layouts: dict[int, Layout] = dict(layouts)
        self.devices = devices  # the storing thread's device states, for tick()

        client_id = options.client_id or f"precast-collect-{socket.gethostname()}-{os.getpid()}"
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        paho_log = logging.getLogger("precast.mqtt.paho")
        paho_log.addFilter(_NotAnError())
        c.enable_logger(paho_log)
        c.will_set(f"{self.prefix}/status", OFFLINE, qos=1, retain=True)
        if self.url.user is not None:
            c.username_pw_set(self.url.user, password)
        if self.url.tls:
            try:
                c.tls_set(ca_certs=options.ca, certfile=options.cert, keyfile=options.key)
            except (ssl.SSLError, OSError) as e:
                raise UsageError(f"--mqtt TLS set-up: {e}") from None
        c.reconnect_delay_set(BACKOFF_MIN, BACKOFF_MAX)
        c.max_inflight_messages_set(INFLIGHT)
        c.max_queued_messages_set(INFLIGHT)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

        # Handed over by the storing thread (deque appends and pops are atomic): docs, or
        # (template, field names, row) to make the doc of.
        self._readings: deque[dict[str, Any] | tuple[int, list[str], Row]] = deque()
        # (kind, device, template): "device" (announce it), "online", "offline", "template"
        # (a reload changed it: its devices announced again)
        self._events: deque[tuple[str, int, int]] = deque()
        # Handed over by paho's thread: what the broker said (see _take_network).
        self._network: deque[tuple[str, int, str]] = deque()
        # The storing thread's own view: device -> available (True) or stale (False).
        self._online: dict[int, bool] = {}
        self._templates: dict[int, int] = {}
        # The publisher thread's: every device's template and availability, and what of
        # that is still to be published (all of it again after a reconnect).
        self._devices: dict[int, int] = {}
        self._avail: dict[int, str] = {}
        self._pending_disc: dict[int, int] = {}
        self._pending_avail: dict[int, str] = {}
        # Diagnostics: (device, JSON) from the storing thread, the latest of each, and those
        # still to be published; what the storing thread sent last (time, received, lost).
        self._diags: deque[tuple[int, str]] = deque()
        self._diag: dict[int, str] = {}
        self._pending_diag: dict[int, str] = {}
        self._diag_sent: dict[int, tuple[float, int, int]] = {}
        # The device configs published and not cleared, this run's and (`published`, the
        # store's topics) earlier runs': a device announced with a new template loses the rest.
        self._record = (
            Published(options.discovery, self.prefix, published)
            if options.discovery is not None
            else None
        )
        self._status_due = False  # `online` to go out after the devices' availability
        self._control: deque[tuple[str, str]] = deque()  # (topic, payload): QoS 1, retained

        self.published = 0
        self.dropped = 0
        self.connects = 0
        self.refusals = 0
        self.connected = False  # paho's thread: between a CONNACK and the connection's end
        self._outage_logged = False
        self._drops_seen = 0  # self.dropped at the publisher's last look
        self._drop_spell = -1  # self.dropped when the current spell of drops began, or -1
        self._first = threading.Event()  # the first connect's outcome is known
        self._start_error: str | None = None
        self._last: Any = None  # paho's MQTTMessageInfo of the last reading handed to it
        self._closing = threading.Event()
        self._close_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._paho_clock = time.CLOCK_THREAD_CPUTIME_ID

    # -- the storing thread's side: never waits

    def write(self, docs: Sequence[dict[str, Any]]) -> None:
        """Readings just committed: queue them, or count them dropped; never wait.

        From a Stored batch only the raw rows are queued (with their template id and field
        names): the JSON object of each is made by the publisher thread, and only for the
        readings that fit in the buffer.
        """
        online = self._online
        templates = self._templates
        buf = self._readings
        room = self.opts.buffer - len(buf)
        if isinstance(docs, Stored):
            for tid, rows in docs.rows.items():
                for row in rows:
                    dev = row[0]
                    if online.get(dev) is not True or templates.get(dev) != tid:
                        self._seen(dev, tid)
                if room > 0:
                    names = docs.names[tid]
                    buf.extend([(tid, names, row) for row in rows[:room]])
                take = min(len(rows), max(room, 0))
                self.dropped += len(rows) - take
                room -= take
            return
        for d in docs:
            dev, tid = d["device"], d["template"]
            if online.get(dev) is not True or templates.get(dev) != tid:
                self._seen(dev, tid)
        take = min(len(docs), max(room, 0))
        buf.extend(docs[:take])
        self.dropped += len(docs) - take

    def _seen(self, dev: int, tid: int) -> None:
        """A device's first reading (this run), its first since it went stale, or a new template."""
        if self._templates.get(dev) != tid:
            self._templates[dev] = tid
            self._events.append(("device", dev, tid))
        self._online[dev] = True
        self._events.append((ONLINE, dev, tid))

    def tick(self, now: float) -> None:
        """Mark the devices gone stale offline (now is unix time); call it about once a second."""
        if self.devices is None:
            return
        online = self._online
        diag = self._diag_sent
        for d in self.devices():
            if online.get(d.device) is not False and stale(d, now):
                # A device with no reading this run may still be `online` (retained) from a
                # collector that was killed: say what it is now.
                online[d.device] = False
                self._events.append((OFFLINE, d.device, d.template))
            sent = diag.get(d.device)
            if sent is None or (sent[1:] != (d.received, d.lost) and now - sent[0] >= DIAG_EVERY):
                diag[d.device] = (now, d.received, d.lost)
                doc = json.dumps(diagnostics_doc(d.received, d.lost))
                self._diags.append((d.device, doc))

    # -- life cycle

    def start(self, timeout: float = 10.0) -> None:
        """Start publishing; MqttError if the broker refuses us, else return (even unreachable).

        The first connect is made here, so that what went wrong can be said; after it
        paho's own loop (its thread) reconnects, with reconnect_delay_set's backoff.
        """
        # Devices of earlier runs gone stale while the collector was away: found before the
        # first connect, so that they are marked offline before `status online` goes out.
        self.tick(time.time())
        c = self.client
        where = self.url.where
        try:
            c.connect(self.url.host, self.url.port, keepalive=self.opts.keepalive)
        except ssl.SSLCertVerificationError as e:
            raise MqttError(
                f"--mqtt {where}: TLS: {e.verify_message or e} (check --mqtt-ca)"
            ) from None
        except (OSError, ssl.SSLError) as e:
            self._outage(getattr(e, "strerror", None) or str(e) or type(e).__name__)
            c.connect_async(self.url.host, self.url.port, keepalive=self.opts.keepalive)
            self._first.set()
        c.loop_start()
        # paho's thread's CPU clock: publishing's share counts its writes too (_run).
        assert c._thread is not None and c._thread.ident is not None
        self._paho_clock = time.pthread_getcpuclockid(c._thread.ident)
        self._first.wait(timeout)
        if self._start_error is not None:
            c.disconnect()
            c.loop_stop()
            raise MqttError(f"--mqtt {where}: {self._start_error}")
        self._thread = threading.Thread(target=self._run, name="precast-mqtt", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is buffered (up to timeout), then `offline` and a clean disconnect."""
        if self._thread is None:
            return
        self._close_deadline = time.monotonic() + timeout
        self._closing.set()
        self._thread.join(timeout + 5.0)
        self._thread = None
        if self._drop_spell >= 0:  # a spell of drops still open: its line, now or never
            log.warning("MQTT: %d readings were not published", self.dropped - self._drop_spell)
            self._drop_spell = -1
        n = len(self._readings)
        if n:
            self._readings.clear()
            self.dropped += n
            log.warning("MQTT: %d readings not published at exit (counted as dropped)", n)

    def set_layouts(self, layouts: Mapping[int, Layout]) -> None:
        """The templates after a reload (SIGHUP); the devices of a template whose discovery
        changed (a field gone or added, a new name) are announced again, orphans cleared."""
        old, self.layouts = self.layouts, dict(layouts)
        disc = self.opts.discovery
        if disc is None:
            return
        for tid, lay in self.layouts.items():
            was = old.get(tid)
            configs = device_configs(disc, self.prefix, 0, lay)
            if was is not None and device_configs(disc, self.prefix, 0, was) != configs:
                self._events.append(("template", 0, tid))

    def counters(self) -> dict[str, int]:
        """Persisted, so `precast stats` and /metrics show them."""
        return {"mqtt_published": self.published, "mqtt_dropped": self.dropped}

    def taken(self) -> int:
        """Readings handed to the broker's client or counted dropped, this run."""
        return self.published + self.dropped

    def missed(self, n: int) -> None:
        """Readings a killed collector committed and may not have published: dropped."""
        self.dropped += n
        self._drops_seen += n
        log.warning(
            "MQTT: %d readings stored before the collector was killed may not have been "
            "published (counted as dropped: the database has them)",
            n,
        )

    def stats(self) -> dict[str, int]:
        """Counts for the tests and the collector's status."""
        return {
            "published": self.published,
            "dropped": self.dropped,
            "buffered": len(self._readings),
            "connected": int(self.connected),
            "connects": self.connects,
        }

    # -- paho's thread: its callbacks only record what happened, for the publisher

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            # MQTT 3.1.1's 4 and 5: paho says "Bad user name or password", "Not authorized".
            why = f"refused the connection: {reason} (check the user and password)"
            if not self._first.is_set():
                self._start_error = why
                self._first.set()
            else:
                self.refusals += 1
                self._outage(why, logging.ERROR)
            return
        self.connects += 1
        again = self._outage_logged or self.connects > 1
        log.info("MQTT broker %s: connected%s", self.url.where, " again" if again else "")
        self._outage_logged = False
        if self.opts.discovery is not None:
            client.subscribe(f"{self.opts.discovery}/status", qos=1)
        # Queued before `connected` is set: the publisher, seeing it set, takes this first.
        self._network.append(("connected", 0, ""))
        self.connected = True
        self._first.set()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        log.debug("MQTT broker %s: connect failed; paho retries", self.url.where)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if not self.connected:
            return  # a refused CONNACK, said in _on_connect
        self.connected = False
        if not self._closing.is_set():
            self._outage("connection lost")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.payload == b"online":  # Home Assistant says so on DISCOVERY/status at start
            self._network.append(("ha-online", 0, ""))

    def _outage(self, why: str, level: int = logging.WARNING) -> None:
        """Said once an outage: the broker is away; paho retries with its backoff."""
        if self._outage_logged:
            log.debug("MQTT broker %s: %s", self.url.where, why)
            return
        log.log(
            level,
            "MQTT broker %s: %s; readings are still stored; retrying (backoff up to %g s)",
            self.url.where,
            why,
            BACKOFF_MAX,
        )
        self._outage_logged = True

    # -- the publisher thread: hands paho the messages, in order, within its CPU share

    def _cpu(self) -> float:
        """CPU seconds of publishing so far: this thread's and paho's, whatever the load."""
        return time.thread_time() + time.clock_gettime(self._paho_clock)

    def _run(self) -> None:
        pause = 0.05
        cpu, wall = self._cpu(), time.monotonic()
        try:
            while not self._closing.wait(pause):
                self._take_events()
                self._log_drops()
                pause = 0.05
                if not self.connected:
                    continue
                # The storing thread queues a device's events before its readings: readings
                # counted before the events are taken never go out ahead of their discovery.
                ready = len(self._readings)
                self._take_network()
                self._take_events()
                if self._publish_control():
                    self._publish_readings(ready)
                # What publishing took since the last round (paho's writes in our pause
                # included): the pause that brings it down to SHARE.
                now_cpu, now = self._cpu(), time.monotonic()
                if self._readings or self._control:
                    pause = max(0.0, (now_cpu - cpu) / SHARE - (now - wall))
                cpu, wall = now_cpu, now
            self._finish()
        except Exception:
            log.exception("MQTT publisher failed; readings are still stored")
            self.client.loop_stop()

    def _take_network(self) -> None:
        """What paho's thread heard: a (re)connect, Home Assistant's start."""
        net = self._network
        while net:
            kind = net.popleft()[0]
            if kind == "connected":
                # Everything retained is published again: the broker may have lost it.
                # `online` goes out after the devices' availability (_publish_control).
                self._control.clear()
                self._status_due = True
                self._queue_collector()
                self._pending_disc = dict(self._devices)
                self._pending_avail = dict(self._avail)
                self._pending_diag = dict(self._diag)
            elif kind == "ha-online":
                log.info("Home Assistant is online: publishing discovery again")
                self._queue_collector()
                self._pending_disc.update(self._devices)

    def _take_events(self) -> None:
        """The storing thread's device events, folded into what is to be published."""
        events = self._events
        while events:
            kind, dev, tid = events.popleft()
            if kind == "device":
                self._devices[dev] = tid
                self._pending_disc[dev] = tid
            elif kind == "template":  # reloaded, changed: every device of it announced again
                self._pending_disc.update((d, t) for d, t in self._devices.items() if t == tid)
            elif self._avail.get(dev) != kind:
                self._avail[dev] = kind
                self._pending_avail[dev] = kind

    def _log_drops(self) -> None:
        """One warning when readings start to be dropped; one line when that spell ends."""
        dropped = self.dropped
        if dropped > self._drops_seen:
            if self._drop_spell < 0:
                self._drop_spell = self._drops_seen
                log.warning(
                    "MQTT: the buffer of %d readings is full; readings that do not fit are "
                    "stored but not published (counted: precast_mqtt_dropped_total)",
                    self.opts.buffer,
                )
            self._drops_seen = dropped
        elif self._drop_spell >= 0 and self.connected and not self._readings:
            log.warning("MQTT: %d readings were not published", dropped - self._drop_spell)
            self._drop_spell = -1

    def _publish_control(self) -> bool:
        """Discovery, availability, then status; False while any is still waiting.

        `online` after the devices' availability: a device that went stale while the
        collector was away is marked offline first (tick() at start), never shown as
        available with its old reading in between.
        """
        q = self._control
        if self._pending_disc:
            for dev, tid in self._pending_disc.items():
                self._queue_discovery(dev, tid)
            self._pending_disc.clear()
        if self._pending_avail:
            for dev, state in self._pending_avail.items():
                q.append((f"{self.prefix}/{dev}/availability", state))
            self._pending_avail.clear()
        if self._status_due:
            q.append((f"{self.prefix}/status", ONLINE))
            self._status_due = False
        while self._diags:
            dev, doc = self._diags.popleft()
            self._diag[dev] = self._pending_diag[dev] = doc
        if self._pending_diag:
            for dev, doc in self._pending_diag.items():
                q.append((f"{self.prefix}/{dev}/diagnostics", doc))
            self._pending_diag.clear()
        publish = self.client.publish
        while q:
            topic, payload = q[0]
            if publish(topic, payload, qos=1, retain=True).rc != 0:
                return False  # paho's QoS 1 queue is full, or the connection just went
            q.popleft()
        return True

    def _publish_readings(self, ready: int) -> None:
        """Up to `ready` readings (and ROUND) from the buffer into paho's queue."""
        buf = self._readings
        prefix = self.prefix
        qos = self.opts.qos
        dumps = json.dumps
        publish = self.client.publish
        n = 0
        try:
            for _ in range(min(ready, ROUND, len(buf))):
                item = buf.popleft()
                r = reading_doc(*item) if isinstance(item, tuple) else item
                # Retained: the broker keeps each device's last reading, which is what Home
                # Assistant shows after it restarts, or when it subscribes to a sensor just
                # discovered (else the first reading, sent with its config, is missed).
                info = publish(f"{prefix}/{r['device']}/reading", dumps(r), qos, retain=True)
                if info.rc:
                    buf.appendleft(item)  # the connection went, or paho's QoS 1 queue is full
                    return
                self._last = info
                n += 1
        finally:
            self.published += n

    def _queue_discovery(self, dev: int, tid: int) -> None:
        """A device's configs, after empty ones for its orphans (the fields it no longer has)."""
        layout = self.layouts.get(tid)
        if self._record is None or layout is None:
            return
        self._control.extend((c.topic, c.payload) for c in self._record.announce(dev, layout))

    def take_configs(self) -> dict[str, bool]:
        """Device configs published (True) or cleared (False) since the last call, by topic:
        what the collector records in its store for the next run."""
        return self._record.take() if self._record is not None else {}

    def _queue_collector(self) -> None:
        """The collector's own discovery: the device every device is via."""
        if self.opts.discovery is not None:
            self._control.extend(
                (c.topic, c.payload) for c in collector_configs(self.opts.discovery, self.prefix)
            )

    def _finish(self) -> None:
        """Closing: publish the buffer until the deadline, then `offline` and disconnect."""
        c = self.client
        deadline = self._close_deadline
        while time.monotonic() < deadline and self.connected:
            ready = len(self._readings)
            self._take_network()
            self._take_events()
            if not (ready or self._control or self._pending_disc):
                break
            if self._publish_control():
                self._publish_readings(ready)
            time.sleep(0.001 if self._readings else 0.0)
        if self.connected:
            last = self._last  # written out (QoS 0) or acknowledged (QoS 1) before `offline`
            if last is not None and last.rc == 0:
                last.wait_for_publish(max(0.1, deadline - time.monotonic()))
            info = c.publish(f"{self.prefix}/status", OFFLINE, qos=1, retain=True)
            if info.rc == 0:
                info.wait_for_publish(2.0)
        c.disconnect()
        c.loop_stop()
        self.connected = False
