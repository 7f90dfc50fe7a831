"""The collector's Prometheus metrics, computed from its state at each scrape.

status() is the collector's snapshot: {"devices": [tracker.Device, ...],
"rejects": {reason: n}, "counters": {"queue_drops": n, "kernel_drops": n,
"jsonl_drops": n}, "queue": datagrams waiting}. Metric names:
precast_rejected_total{reason} (every reason, zeros included: the codec's and
replay, mic-required, jump, device-limit), precast_devices (tracked),
precast_device_<received|lost|duplicates|late|bad|reboots|replays|conflicts>{device} and
precast_device_last_seen_seconds{device} for the `devices` most recently seen
only (a scrape stays small and fast however many devices there are),
precast_dropped_total{where=kernel|queue|jsonl}, precast_queue_depth; with --mqtt,
precast_mqtt_published_total and precast_mqtt_dropped_total (readings stored but not
published: buffer full). The server is bounded by size: MAX_CONNECTIONS at once, each
closed after CONNECTION_TIMEOUT s of silence.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from precast.collect.tracker import TRACKER_REASONS
from precast.errors import UsageError
from precast.wire.constants import REASONS

DEFAULT_METRICS_DEVICES = 1000
MAX_CONNECTIONS = 16  # scrapes served at once (a Prometheus server or two, a curl)
CONNECTION_TIMEOUT = 10.0  # s a connection may stay silent (Prometheus' default scrape timeout)


def serve_metrics(
    status: Callable[[], dict[str, Any]],
    hostport: tuple[str, int],
    devices: int = DEFAULT_METRICS_DEVICES,
) -> tuple[str, int]:
    """Serve Prometheus text from status() at each scrape; the bound (host, port).

    devices: per-device series for at most this many devices, the most recently seen.
    """
    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector as PromCollector

    class Metrics(PromCollector):
        def collect(self) -> Iterator[Any]:
            s = status()
            rej = CounterMetricFamily(
                "precast_rejected", "Frames refused, by reason", labels=["reason"]
            )
            counts = {r: 0 for r in (*REASONS, *TRACKER_REASONS)}
            counts.update(s["rejects"])
            for reason, n in sorted(counts.items()):
                rej.add_metric([reason], n)
            yield rej
            every = s["devices"]
            yield GaugeMetricFamily(
                "precast_devices",
                "Devices tracked (per-device series: the last seen only)",
                value=len(every),
            )
            shown = (
                every
                if len(every) <= devices
                else sorted(every, key=lambda d: d.last_seen, reverse=True)[:devices]
            )
            per = {
                "received": ("Distinct readings stored", CounterMetricFamily),
                "lost": ("Sequence numbers never received", GaugeMetricFamily),
                "duplicates": ("Readings received again", CounterMetricFamily),
                "late": ("Readings that arrived after a higher seq", CounterMetricFamily),
                "bad": ("Frames with a failed CRC or MIC", CounterMetricFamily),
                "reboots": ("Sequence restarts (new epochs)", CounterMetricFamily),
                "replays": (
                    "Frames refused as replays (a MIC seq below the window, or a frame "
                    "identical to one stored)",
                    CounterMetricFamily,
                ),
                "conflicts": (
                    "Frames refused as a second sequence under a CRC device's id",
                    CounterMetricFamily,
                ),
            }
            for name, (doc, kind) in per.items():
                fam = kind(f"precast_device_{name}", doc, labels=["device"])
                for d in shown:
                    fam.add_metric([str(d.device)], getattr(d, name))
                yield fam
            seen = GaugeMetricFamily(
                "precast_device_last_seen_seconds",
                "Unix time of the device's last reading",
                labels=["device"],
            )
            for d in shown:
                seen.add_metric([str(d.device)], d.last_seen)
            yield seen
            drops = CounterMetricFamily(
                "precast_dropped", "Datagrams never decoded, by where", labels=["where"]
            )
            drops.add_metric(["kernel"], s["counters"]["kernel_drops"])
            drops.add_metric(["queue"], s["counters"]["queue_drops"])
            drops.add_metric(["jsonl"], s["counters"].get("jsonl_drops", 0))
            yield drops
            yield GaugeMetricFamily(
                "precast_queue_depth", "Datagrams waiting to be stored", value=s["queue"]
            )
            c = s["counters"]
            if "mqtt_published" in c:
                yield CounterMetricFamily(
                    "precast_mqtt_published",
                    "Stored readings published to the MQTT broker",
                    value=c["mqtt_published"],
                )
                yield CounterMetricFamily(
                    "precast_mqtt_dropped",
                    "Stored readings not published (the MQTT buffer was full)",
                    value=c["mqtt_dropped"],
                )

    registry = CollectorRegistry()
    registry.register(Metrics())
    host, port = hostport
    try:
        server = _server(host, port, make_wsgi_app(registry))
    except OSError as e:
        raise UsageError(f"--metrics {host}:{port}: {e.strerror}") from None
    threading.Thread(target=server.serve_forever, name="precast-metrics", daemon=True).start()
    return host, int(server.server_port)


def _server(host: str, port: int, app: Any) -> WSGIServer:
    """prometheus_client's thread-per-connection server, bounded: at most MAX_CONNECTIONS
    connections at once (one more is closed at once, unanswered), each closed after
    CONNECTION_TIMEOUT s without a byte. Unbounded, 800 idle connections made 804 threads."""
    from prometheus_client.exposition import ThreadingWSGIServer

    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    class Handler(WSGIRequestHandler):
        timeout = CONNECTION_TIMEOUT  # StreamRequestHandler: the socket's timeout

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingWSGIServer):
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

        def process_request(self, request: Any, client_address: Any) -> None:
            if not slots.acquire(blocking=False):
                self.shutdown_request(request)
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                slots.release()
                raise

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client gone or silent past the timeout: its connection is closed, no more

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                slots.release()

    return make_server(host, port, app, Server, handler_class=Handler)
