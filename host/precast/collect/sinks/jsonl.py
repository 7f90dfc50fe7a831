"""The --jsonl sink: one JSON object per stored reading, a line each, to a file or stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import IO

from precast.collect.sinks import Doc


class JsonlSink:
    """Appends one line per reading and flushes after each batch."""

    name = "jsonl"

    def __init__(self, path: str) -> None:
        self.path = path
        self.written = 0
        self._out: IO[str] = sys.stdout if path == "-" else open(path, "a", encoding="utf-8")

    def write(self, docs: Sequence[Doc]) -> None:
        if not docs:
            return
        self._out.write("\n".join(map(json.dumps, docs)) + "\n")
        self._out.flush()
        self.written += len(docs)

    def tick(self, now: float) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {"written": self.written}

    def close(self) -> None:
        self._out.flush()
        if self._out is not sys.stdout:
            self._out.close()
