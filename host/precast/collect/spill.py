"""The spill file: datagrams a collector received but could not store before it exited.

When the database stays unreachable past the stop timeout at SIGTERM, the
collector appends every datagram not yet written (those of the failed batch
and those still queued) to a JSON-lines file, one object per datagram, in
arrival order:

    {"t": 1764620000.123456, "source": "192.0.2.7:40000", "data": "<hex>"}

and, when drop counters had grown since the last write, one line
`{"counters": {"queue_drops": N, "kernel_drops": N}}` holding the increments.
The datagrams are raw, not decoded: `precast collect --replay-spill FILE`
runs them through the same checks and the same books as if they had just
arrived, so a replayed spill gives the database an undisturbed run would have.
A spill that was replayed is renamed FILE.replayed, so it is not counted twice.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from precast.collect.files import LinkRefused, open_append
from precast.errors import UsageError

log = logging.getLogger("precast.collect")

DEFAULT_SPILL = "precast-spill.jsonl"


def write_spill(
    path: str | Path,
    batches: Iterable[tuple[float, Iterable[tuple[bytes, str]]]],
    counters: Mapping[str, int],
) -> int:
    """Append the datagrams (and counter increments) to path, fsync'd; how many datagrams."""
    lines = []
    for ts, batch in batches:
        for data, source in batch:
            lines.append(json.dumps({"t": ts, "source": source, "data": data.hex()}))
    extra = {k: n for k, n in counters.items() if n}
    if extra:
        lines.append(json.dumps({"counters": extra}))
    if not lines:
        return 0
    fd = open_append("--spill", path)  # never through a link (files.py)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return len(lines) - (1 if extra else 0)


Spilled = list[tuple[float, list[tuple[bytes, str]]]]


def spill_unwritten(
    path: str, batches: Spilled, readings: int, counters: Mapping[str, int], cause: BaseException
) -> None:
    """Stopping with the database unwritable: the batches to the spill file, and one log line
    saying how many readings (of how many datagrams) wait there, or were lost if it failed."""
    n = sum(len(b) for _, b in batches)
    try:
        write_spill(path, batches, counters)
    except (OSError, LinkRefused) as err:
        log.error(
            "stopping: the database stays unwritable (%s) and the spill file %s cannot be "
            "written (%s): %d readings (in %d datagrams) received were not stored",
            cause,
            path,
            err.strerror if isinstance(err, OSError) else "a symbolic link, never followed",
            readings,
            n,
        )
        return
    log.error(
        "stopping: the database stays unwritable (%s): %d readings (in %d datagrams) "
        "received were not stored; they are in %s (load them with "
        "`precast collect --replay-spill %s`)",
        cause,
        readings,
        n,
        path,
        path,
    )


def read_spill(path: str | Path) -> tuple[Spilled, dict[str, int]]:
    """(batches of (data, source) by arrival time, counter increments) from a spill file."""
    batches: Spilled = []
    counters: dict[str, int] = {}
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise UsageError(f"--replay-spill {path}: {e.strerror}") from None
    with f:
        for n, line in enumerate(_lines(f), 1):
            try:
                doc: Any = json.loads(line)
                if "counters" in doc:
                    for k, v in doc["counters"].items():
                        counters[str(k)] = counters.get(str(k), 0) + int(v)
                    continue
                ts = float(doc["t"])
                item = (bytes.fromhex(doc["data"]), str(doc["source"]))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise UsageError(f"{path}:{n}: not a spill line ({e})") from None
            if batches and batches[-1][0] == ts:
                batches[-1][1].append(item)
            else:
                batches.append((ts, [item]))
    return batches, counters


def _lines(f: Iterable[str]) -> Iterator[str]:
    for line in f:
        line = line.strip()
        if line:
            yield line
