"""The collector's Prometheus metrics, computed from its state at each scrape.

status() is the collector's snapshot: {"devices": [tracker.Device, ...],
"rejects": {reason: n}, "counters": {"queue_drops": n, "kernel_drops": n},
"queue": datagrams waiting}. Metric names: precast_rejected_total{reason},
precast_device_<received|lost|duplicates|late|bad|reboots>{device},
precast_device_last_seen_seconds{device}, precast_dropped_total{where},
precast_queue_depth; with --mqtt, precast_mqtt_published_total and
precast_mqtt_dropped_total (readings stored but not published: buffer full).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from precast.errors import UsageError


def serve_metrics(
    status: Callable[[], dict[str, Any]], hostport: tuple[str, int]
) -> tuple[str, int]:
    """Serve Prometheus text from status() at each scrape; the bound (host, port)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector as PromCollector

    class Metrics(PromCollector):
        def collect(self) -> Iterator[Any]:
            s = status()
            rej = CounterMetricFamily(
                "precast_rejected", "Frames refused, by reason", labels=["reason"]
            )
            for reason, n in sorted(s["rejects"].items()):
                rej.add_metric([reason], n)
            yield rej
            per = {
                "received": ("Distinct readings stored", CounterMetricFamily),
                "lost": ("Sequence numbers never received", GaugeMetricFamily),
                "duplicates": ("Readings received again", CounterMetricFamily),
                "late": ("Readings that arrived after a higher seq", CounterMetricFamily),
                "bad": ("Frames with a failed CRC or MIC", CounterMetricFamily),
                "reboots": ("Sequence restarts (new epochs)", CounterMetricFamily),
            }
            for name, (doc, kind) in per.items():
                fam = kind(f"precast_device_{name}", doc, labels=["device"])
                for d in s["devices"]:
                    fam.add_metric([str(d.device)], getattr(d, name))
                yield fam
            seen = GaugeMetricFamily(
                "precast_device_last_seen_seconds",
                "Unix time of the device's last reading",
                labels=["device"],
            )
            for d in s["devices"]:
                seen.add_metric([str(d.device)], d.last_seen)
            yield seen
            drops = CounterMetricFamily(
                "precast_dropped", "Datagrams never decoded, by where", labels=["where"]
            )
            drops.add_metric(["kernel"], s["counters"]["kernel_drops"])
            drops.add_metric(["queue"], s["counters"]["queue_drops"])
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
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise UsageError(f"--metrics {host}:{port}: {e.strerror}") from None
    return host, int(server.server_port)
