"""`make demo`: a simulated sensor stream, encoded into frames, decoded and printed.

Each reading goes through the same path a board and the collector use:
the compiled template is patched (fields, seq, CRC, UDP checksum), then
the frame is decoded and checked as a receiver would.
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

from precast import Codec, compile_template, encode, load_template
from precast.codec import Reading

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    lay = compile_template(load_template(ROOT / "templates" / "env-node.toml"))
    codec = Codec([lay])
    rng = random.Random(1)
    print(f"template {lay.template.name}: {lay.frame_len}-byte frame, "
          f"{lay.payload_len}-byte payload; per reading only {lay.payload_len - 4} payload bytes "
          "and the UDP checksum change")  # fmt: skip
    for seq in range(10):
        values = {
            "temperature": round(21 + 2 * math.sin(seq / 3) + rng.gauss(0, 0.05), 2),
            "humidity": round(45 + rng.gauss(0, 0.5), 2),
            "pressure": 101325 + rng.randint(-30, 30),
            "battery": 3700 - seq,
        }
        frame = encode(lay, values, device=7, seq=seq)
        r = codec.decode(frame)
        assert isinstance(r, Reading)
        print(f"seq {r.seq:2d}  {frame[42:].hex()}  ->  {r.fields}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
