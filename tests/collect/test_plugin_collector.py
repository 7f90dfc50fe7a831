"""The collector against a simulated fleet with every kind of fault, through the plugin's
fixtures: its counters must equal the faults the fleet says it injected."""

from __future__ import annotations

from collections.abc import Callable

from precast.pytest_plugin import FleetRun, PrecastCollector


def test_fleet_faults_match_the_collector_counters(
    sensor_fleet: Callable[..., FleetRun], precast_collector: PrecastCollector
) -> None:
    run = sensor_fleet(
        devices=5, rate=4000, duration=0.6, loss=0.03, dup=0.03, reorder=0.03, corrupt=0.03, seed=11
    )
    assert run.lost and run.duplicated and run.reordered and run.corrupted
    precast_collector.wait_for_readings(run.stored)
    stats = precast_collector.stats()
    devices = stats["devices"]
    assert sorted(d["device"] for d in devices) == run.devices
    # A corrupted frame is refused by its check, so its reading is a gap too.
    assert sum(d["lost"] for d in devices) == run.lost + run.corrupted
    assert sum(d["duplicates"] for d in devices) == run.duplicated
    assert sum(d["late"] for d in devices) == run.reordered
    assert sum(stats["rejected"].values()) == run.corrupted
    assert precast_collector.count() == run.stored
