"""What a run did, for the line main.py prints at the end: loaded then, not held by the loop.

app.run imports it once the loop is over (the count reached, Ctrl-C), with
the heap unlocked: a node that runs until its power goes never loads it, and
one that stops holds it only for the summary (about 480 bytes of RAM on a
32-bit port the loop does without).
"""


class Counts:
    """What a run did: readings made, and the link's sent/failed/dropped/reopened.

    Every reading goes to the link once and is either sent (at the first try
    or a retry) or dropped; a datagram that went out and was then refused by the
    collector's host (ECONNREFUSED at the send after it) counts as refused: sent
    is readings - dropped - refused.
    """

    def __init__(self, readings, link, keeper=None):
        self.readings = readings
        self.backlog = None if keeper is None else keeper.backlog.counts()
        self.sent = max(0, readings - link.dropped - link.refused)
        self.failed = link.failed
        self.dropped = link.dropped
        self.reopened = link.reopened
        self.last_errno = link.last_errno
        self.last_error = link.last_error  # its words: why the transport cannot send or open
        self.detail = getattr(link.transport, "summary", None)

    def __str__(self):
        line = "precast: readings %d sent %d failed %d dropped %d reopened %d last_errno %d" % (
            self.readings,
            self.sent,
            self.failed,
            self.dropped,
            self.reopened,
            self.last_errno,
        )
        if self.last_errno and self.last_error:
            line += ' last_error "%s"' % self.last_error
        return line
