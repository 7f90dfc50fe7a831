"""The one backoff every retry on the host takes its delays from."""

from __future__ import annotations

import itertools
import time

from precast.collect.backoff import Backoff


def test_doubles_to_the_ceiling_and_resets() -> None:
    b = Backoff(0.1, 5.0)
    assert list(itertools.islice(b, 9)) == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    b.reset()
    assert next(b) == 0.1


def test_sleep_never_past_the_deadline() -> None:
    b = Backoff(10.0, 10.0)
    t0 = time.monotonic()
    b.sleep(deadline=t0 + 0.05)
    b.sleep(deadline=t0 - 1)  # already past: no wait at all
    assert time.monotonic() - t0 < 2.0
