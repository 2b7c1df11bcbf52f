"""One time budget per message, from the end of DATA to the reply.

Postfix waits ``smtpd_proxy_timeout`` for our reply; if it gave up first the
client would hear 451 for a message we might still store. So everything done
for one message (waiting for a token, each PUT/HEAD/DELETE, the admin relay)
asks this one object how long it may take, instead of each step having its
own timeout that adds up behind the others.
"""

import time


class Deadline:
    """A point in time.monotonic(); steps take ``min(their timeout, what is left)``."""

    def __init__(self, seconds, clock=time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self.at = clock() + seconds

    def remaining(self):
        return max(0.0, self.at - self._clock())

    def expired(self):
        return self.remaining() <= 0

    def timeout(self, cap):
        """The timeout for one step: its own `cap`, cut to what is left."""
        return min(cap, self.remaining())

    def elapsed(self):
        return self.seconds - (self.at - self._clock())
