"""Collecting: receive frames, check them, keep each device's books, store the readings.

- daemon.py    `precast collect`: the receiving and storing threads
- receiver.py  the UDP socket: binding, batched reads, the kernel's drop count
- backlog.py   the bounded queue between the threads
- keys.py      the keys file and key file (a device's AES key), their permissions checked
- tracker.py   each device's sequence books: loss, duplicates, late, reboots, replays,
               held far jumps, a CRC device's rival sequence, who must use a MIC, the
               device bound
- replays.py   the digests of each device's last stored frames: a frame stored again
- device.py    `precast device reset`: an operator re-admits a device
- spill.py     the spill file: datagrams not stored at exit
- rows.py      a stored reading as a row and as a JSON object
- utc.py       received_at, the stored time: one conversion each way
- store/       the database interfaces (the collector's Store, every command's Reader), the
               devices table from Device (schema.py), the backends (sqlite.py, postgres.py)
               and their readers
- dburl.py     which backend a --db value names, and the value without its password
- outage.py    retrying a batch with backoff while the database is away
- backoff.py   the delays of every retry, doubling to a ceiling
- spill.py     what could not be stored at exit, and --replay-spill
- sinks/       where stored readings go besides the database (jsonl.py)
- report.py    the log: new devices, refused frames with their likely cause
- metrics.py   Prometheus metrics; stats.py `precast stats`
"""
