"""The retry index: which messages in retry/ are due, in one listing, oldest first.

A message in ``retry/`` waits until its ``Not-Before`` time. Reading that
time from every object in ``retry/`` costs one HEAD per waiting message on
every claim; instead, each retry has a zero-byte entry
``retry-at/<not-before>/<name>`` whose name sorts by time (fixed width,
zero-padded), so that one listing ending at "now" returns exactly the due
ones, oldest first.

The entry is written before the copy into ``retry/`` and deleted after the
claim that takes the message out: a crash between leaves an entry without a
``retry/`` object, which is harmless (the claim's copy finds no source, and
the entry is deleted) and which ``recover`` removes; a ``retry/`` object
without an entry (put there by an older version) gets one from ``recover``.
"""

RETRY_AT = "retry-at/"
# Seconds with milliseconds, zero-padded: good until the year 5138.
TIME_WIDTH = 15


def entry_path(name, not_before):
    """The index entry of `name`, due at `not_before` (seconds since the epoch)."""
    return f"{RETRY_AT}{max(0.0, not_before):0{TIME_WIDTH}.3f}/{name}"


def due_before(now):
    """The end_marker of a listing of the entries due at `now`, and only those.

    A listing returns names below its end_marker: "/" sorts before "0",
    so the entries due exactly at `now` are included.
    """
    return f"{RETRY_AT}{max(0.0, now):0{TIME_WIDTH}.3f}0"


def parse(path):
    """(not_before, name) of an entry's path, or None for a name that is not one."""
    stamp, _, name = path[len(RETRY_AT):].partition("/")
    try:
        return float(stamp), name
    except ValueError:
        return None
