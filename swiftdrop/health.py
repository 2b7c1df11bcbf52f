"""What ``systemctl status swiftdrop`` shows, and the watchdog's proof of life.

systemd restarts the service when ``WatchdogSec=`` passes without a
``WATCHDOG=1``. The pings come from the accept loop itself (Server.run calls
:meth:`Heartbeat.beat` on every turn), not from a timer thread: a timer
would keep pinging while the loop that takes Postfix's connections is stuck.
The same turn updates ``STATUS=`` with the last hour's figures.
"""

import collections
import os
import threading
import time

from systemd.daemon import notify

WINDOW_MINUTES = 60
STATUS_EVERY = 5.0  # seconds; a status line is for people, not for every message


class Activity:
    """Stored/failed/rejected messages in the last hour (minute buckets), the last failure."""

    def __init__(self, clock=time.monotonic, wall_clock=time.time):
        self.clock = clock
        self.wall_clock = wall_clock
        self._lock = threading.Lock()
        self._minutes = collections.deque()  # [minute, Counter of result]
        self.last_failure = None  # wall-clock time of the last 4xx

    def replied(self, reply):
        """Note one message's final reply."""
        result = {"2": "stored", "4": "failed"}.get(reply[0], "rejected")
        minute = int(self.clock() // 60)
        with self._lock:
            if not self._minutes or self._minutes[-1][0] != minute:
                self._minutes.append([minute, collections.Counter()])
            self._minutes[-1][1][result] += 1
            if result == "failed":
                self.last_failure = self.wall_clock()

    def last_hour(self):
        """Counts of stored, failed and rejected messages in the last 60 minutes."""
        oldest = int(self.clock() // 60) - WINDOW_MINUTES + 1
        total = collections.Counter(stored=0, failed=0, rejected=0)
        with self._lock:
            while self._minutes and self._minutes[0][0] < oldest:
                self._minutes.popleft()
            for _, counts in self._minutes:
                total.update(counts)
        return total

    def summary(self):
        """``stored 1,204, failed 0 in the last hour; last failure —``."""
        counts = self.last_hour()
        text = f"stored {counts['stored']:,}, failed {counts['failed']:,}"
        if counts["rejected"]:
            text += f", rejected {counts['rejected']:,}"
        when = "—"
        if self.last_failure is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.last_failure))
        return f"{text} in the last hour; last failure {when}"


def watchdog_interval(environ=os.environ):
    """Seconds between pings (half of WatchdogSec=), or None when systemd wants none."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


class Heartbeat:
    """Called on every turn of the accept loop: WATCHDOG=1 when due, STATUS= when changed."""

    def __init__(self, activity, *, send=notify, clock=time.monotonic, environ=os.environ):
        self.activity = activity
        self.send = send
        self.clock = clock
        self.ping_every = watchdog_interval(environ)
        # The longest the loop may wait for a connection before it must beat.
        self.wait = min(self.ping_every or STATUS_EVERY, STATUS_EVERY)
        self._next_ping = self._next_status = 0.0
        self._status = None

    def beat(self):
        now = self.clock()
        lines = []
        if self.ping_every is not None and now >= self._next_ping:
            lines.append("WATCHDOG=1")
            self._next_ping = now + self.ping_every
        if now >= self._next_status:
            self._next_status = now + STATUS_EVERY
            status = self.activity.summary()
            if status != self._status:
                self._status = status
                lines.append(f"STATUS={status}")
        if lines:
            self.send("\n".join(lines))
