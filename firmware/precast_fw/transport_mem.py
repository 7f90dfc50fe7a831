"""In-memory transport, for tests: counts what it is given and keeps the last one.

`last` is the memoryview it was handed (the sender's frame, not a copy);
`on_send`, when set, is called with it, so a test can record each frame.
"""


class Transport:
    """send(mv) never fails; count and last say what was sent."""

    FRAME = True

    def __init__(self, tpl=None, cfg=None):
        self.count = 0
        self.last = None
        self.on_send = None

    def send(self, mv):
        self.count += 1
        self.last = mv
        if self.on_send is not None:
            self.on_send(mv)

    def close(self):
        pass
