"""``swiftdrop queue run``: claim a message, pipe it to a command, finish it, repeat.

The state machine lives in :mod:`swiftdrop.queue`; this is the process around
it, and what makes a worker outlast its environment. Swift restarting,
Keystone or Redis away for a while, a connection cut mid-request: a worker
logs it at warning, waits (1 s, doubling up to a minute) and carries on;
nothing of the queue is lost, because a message is only ever moved while its
lock is held, and one whose finish could not be recorded is returned to
``retry/`` by ``recover`` once its lease has run out. Only a bug in our own
code ends the worker (and systemd starts it again).
"""

import collections
import logging
import os
import signal
import subprocess
import tempfile
import time

from .failures import service_errors
from .queue import LostLock
from .verdicts import VERDICT_KEYS

log = logging.getLogger(__name__)

EX_TEMPFAIL = 75
FIRST_BACKOFF = 1.0
LONGEST_BACKOFF = 60.0
# How often a worker looks up from a running command: SIGTERM's grace, a lost lock.
WATCH = 1.0
# Under the 128 KiB one environment string may have (MAX_ARG_STRLEN), with room to spare.
MAX_RCPT_ENV = 100_000


def environmental_errors(queue):
    """What a Swift, Keystone or lock request can raise when the world misbehaves.

    The filter's error boundary (:func:`failures.service_errors`) plus the lock's
    own (Redis away).
    """
    return (*service_errors(), *queue.lock.errors)


def work(queue, command, stop, *, poll=5.0, dedup=False, once=False, grace=30.0):
    """The worker loop: claim, pipe to `command`, finish; returns a Counter of outcomes.

    The message goes to the command's stdin; exit 0 means done, 75
    (EX_TEMPFAIL) retry, anything else failed. The queue's heartbeat keeps
    the lock from claim to finish. When `stop` is set the loop ends after the
    current message; a command still running `grace` seconds later is killed
    and its message goes back to retry/.
    """
    outcomes = collections.Counter()
    failing = environmental_errors(queue)
    backoff = FIRST_BACKOFF
    while not stop.is_set():
        try:
            claimed = queue.claim(dedup=dedup)
        except failing as error:
            refusal = queue.refusal(error)
            # A missing right does not pass by itself: err, for whoever must grant
            # it; the worker keeps trying, so that granting it is all it takes.
            log.log(logging.WARNING if refusal is None else logging.ERROR,
                    "cannot claim from %s: %s; trying again in %.0f s",
                    queue.container, refusal or error, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, LONGEST_BACKOFF)
            continue
        backoff = FIRST_BACKOFF
        if claimed is None:
            if once:
                break
            stop.wait(poll)
            continue
        try:
            status = _run_command(queue, claimed, command, stop=stop, grace=grace)
            state = "done" if status == 0 else "retry" if status in (EX_TEMPFAIL, None) \
                else "failed"
            # None: we killed the command ourselves after the grace; no status to tell.
            metadata = {} if status is None else {"Exit-Status": status}
            target = _finish(queue, claimed, state, metadata,
                             reason=failure_reason(status) if state == "failed" else None,
                             stop=stop, failing=failing)
        except LostLock:
            queue.abandon(claimed)
            log.error("lost the lock on %s while working on it; leaving it", claimed.name)
            outcomes["lost"] += 1
            continue
        if target is None:
            outcomes["unfinished"] += 1
            continue
        outcomes[target.rstrip("/")] += 1
        log.info("%s -> %s (exit status %s)", claimed.name, target, status)
    return outcomes


def failure_reason(status):
    """The Failed-Reason of a command's exit status: ``exit status 3``, ``killed by SIGKILL``.

    subprocess reports a command killed by a signal as minus the signal's number.
    """
    if status >= 0:
        return f"exit status {status}"
    try:
        return f"killed by {signal.Signals(-status).name}"
    except ValueError:  # a real-time signal has no name
        return f"killed by signal {-status}"


def _finish(queue, claimed, state, metadata, *, reason, stop, failing):
    """queue.finish, tried again for a lease's time; None if it never went through.

    Each try goes on with the lock the claim took, which the heartbeat keeps.
    Giving up leaves the message in processing/ under a lock left to run
    out: recover then moves it to retry/, so the command may see it once
    more (SWIFTDROP_REDELIVERED), but it is never lost.
    """
    give_up = time.monotonic() + queue.settings.lease
    backoff = FIRST_BACKOFF
    while True:
        try:
            return queue.finish(claimed, state, metadata, reason=reason)
        except failing as error:
            if time.monotonic() + backoff > give_up:
                log.error("cannot finish %s as %s: %s; recover will return it to retry/",
                          claimed.name, state, error)
                queue.abandon(claimed)
                return None
            log.warning("cannot finish %s as %s: %s; trying again in %.0f s",
                        claimed.name, state, error, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, LONGEST_BACKOFF)


def verdict_environment(metadata):
    """SWIFTDROP_SPAM_ACTION, SWIFTDROP_SPF ...: the stored verdicts ("" when none)."""
    return {f"SWIFTDROP_{key.upper().replace('-', '_')}": metadata.get(key, "")
            for key in VERDICT_KEYS}


def _run_command(queue, claimed, command, *, stop, grace):
    """Exit status of `command` fed with the message; None if it had to be killed.

    Raises LostLock when the heartbeat finds the lock gone meanwhile.
    """
    metadata = claimed.metadata
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", prefix="swiftdrop-rcpt-",
                                     suffix=".txt") as rcpt_file:
        rcpt_file.write("".join(f"{address}\n" for address in claimed.recipients))
        rcpt_file.flush()
        env = dict(os.environ, SWIFTDROP_NAME=claimed.name,
                   SWIFTDROP_CONTAINER=queue.container,
                   SWIFTDROP_ATTEMPTS=str(claimed.attempts),
                   SWIFTDROP_DELIVERY=str(claimed.delivery),
                   SWIFTDROP_REDELIVERED="1" if claimed.redelivered else "0",
                   SWIFTDROP_MAIL_FROM=metadata.get("mail-from", ""),
                   **recipient_environment(claimed.recipients, rcpt_file.name),
                   SWIFTDROP_MESSAGE_ID=metadata.get("message-id", ""),
                   SWIFTDROP_DEDUP_MD5=metadata.get("dedup-md5", ""),
                   **verdict_environment(metadata))
        return _watch(queue, claimed, command, env, stop=stop, grace=grace)


def recipient_environment(recipients, path):
    """SWIFTDROP_RCPT_TO (one address a line), _RCPT_COUNT and _RCPT_FILE.

    An environment string may not exceed 128 KiB (Linux's MAX_ARG_STRLEN):
    a list longer than MAX_RCPT_ENV leaves SWIFTDROP_RCPT_TO empty, and
    SWIFTDROP_RCPT_FILE, the same list in a file, always holds all of them.
    """
    listed = "\n".join(recipients)
    return {"SWIFTDROP_RCPT_TO": listed if len(listed.encode()) <= MAX_RCPT_ENV else "",
            "SWIFTDROP_RCPT_COUNT": str(len(recipients)), "SWIFTDROP_RCPT_FILE": path}


def _watch(queue, claimed, command, env, *, stop, grace):
    """Run `command` to its end, checking the lock; None if it had to be killed."""
    process = subprocess.Popen(command, stdin=subprocess.PIPE, env=env)
    stdin, stopping_since = claimed.body, None
    while True:
        try:
            process.communicate(input=stdin, timeout=WATCH)
            return process.returncode
        except subprocess.TimeoutExpired:
            stdin = None  # already handed over; communicate() keeps feeding it
        if stop.is_set():
            stopping_since = stopping_since or time.monotonic()
            if time.monotonic() - stopping_since > grace:
                process.kill()
                process.wait()
                return None
        queue.check(claimed)
