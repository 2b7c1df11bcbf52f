"""``swiftdrop queue run``: claim a message, hand it over, finish it, repeat.

A message is handed to a command (its stdin; :class:`CommandConsumer`) or
POSTed to a webhook (:class:`WebhookConsumer`, over swiftdrop.webhook and
swiftdrop.payload); the loop around either is the same (:func:`consume`).

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
from dataclasses import dataclass, field
import logging
import os
import random
import signal
import subprocess
import tempfile
import time

from . import metrics
from .config import public_url
from .failures import describe_failure, service_errors
from .links import Links, tempurl_key
from .payload import identity_headers, json_body, raw_headers
from .queue import LostLock
from .verdicts import VERDICT_KEYS
from .webhook import Answer, post, request_headers, shortened

log = logging.getLogger(__name__)

# sysexits.h's EX_DATAERR: the one exit status that fails a message for
# good. Everything else but 0 (a crash, a signal, 75, a timeout) is a retry.
EX_DATAERR = 65
FIRST_BACKOFF = 1.0
LONGEST_BACKOFF = 60.0
# A command past its timeout gets SIGTERM, and SIGKILL this much later.
TERM_GRACE = 5.0
# Each empty-queue wait is stretched or shrunk by up to this share, at
# random: workers started together would otherwise list cur/ in lockstep
# and race for every new message.
POLL_JITTER = 0.2
# How often a worker looks up from a running command: SIGTERM's grace, a lost lock.
WATCH = 1.0
# Under the 128 KiB one environment string may have (MAX_ARG_STRLEN), with room to spare.
MAX_RCPT_ENV = 100_000


def environmental_errors(queue):
    """What a Swift, Keystone or lock request can raise when the world misbehaves.

    The filter's error boundary (:func:`failures.service_errors`) plus the lock's
    own (Redis away).
    """
    return (*service_errors(), *queue.errors)


def work(queue, command, stop, *, poll=5.0, dedup=False, once=False, grace=30.0,
         timeout=None):
    """The command worker loop: claim, pipe to `command`, finish; returns a Counter of outcomes.

    The message goes to the command's stdin; exit 0 means done, 65
    (EX_DATAERR) failed, anything else (75, 1, a signal, running past
    `timeout` seconds) a retry, until the attempts run out (:func:`judge`).
    `timeout` None is the queue's ``queue_command_timeout``; 0 is none. When
    `stop` is set the loop ends after the current message; a command still
    running `grace` seconds later is killed and its message goes back to retry/.
    """
    timeout = queue.settings.command_timeout if timeout is None else timeout
    return consume(queue, CommandConsumer(command, grace=grace, timeout=timeout), stop,
                   poll=poll, dedup=dedup, once=once)


@dataclass(frozen=True)
class Handed:
    """How one hand-over went: the state it asks for, why, and what to record on the message.

    `wait_at_least` is the least delay a retry asks for (a webhook's
    Retry-After), None for the queue's back-off alone.
    """

    state: str
    cause: str
    metadata: dict = field(default_factory=dict)
    wait_at_least: float | None = None


def consume(queue, consumer, stop, *, poll=5.0, dedup=False, once=False):
    """The worker loop: claim, hand over to `consumer`, finish; returns a Counter of outcomes.

    The command and the webhook differ only in `consumer`: its
    ``hand_over(queue, claimed, stop)`` gives the message to the consumer
    and returns a Handed, its ``finished(queue, claimed, handed, target)``
    says what became of it (target None: not finished). The queue's
    heartbeat keeps the lock from claim to finish, through the hand-over
    however long it takes. When `stop` is set the loop ends after the
    current message.
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
            stop.wait(poll * (1 + POLL_JITTER * (2 * random.random() - 1)))
            continue
        handed = None
        # The queue of the shard container it came from (swiftdrop.queue.sharded):
        # its container, connection and lock, from hand-over to finish.
        holder = queue.holder(claimed)
        try:
            handed = consumer.hand_over(holder, claimed, stop)
            target = _finish(holder, claimed, handed, stop=stop, failing=failing)
        except LostLock:
            holder.abandon(claimed)
            log.error("lost the lock on %s while working on it; leaving it", claimed.name)
            outcomes["lost"] += 1
            if handed is not None:
                consumer.finished(holder, claimed, handed, None)
            continue
        consumer.finished(holder, claimed, handed, target)
        outcomes["unfinished" if target is None else target.rstrip("/")] += 1
    return outcomes


class CommandConsumer:
    """Hands a message to a command's stdin, its envelope to its environment; judges its exit."""

    def __init__(self, command, *, grace, timeout):
        self.command, self.grace, self.timeout = command, grace, timeout

    def hand_over(self, queue, claimed, stop):
        status, killed_because = _run_command(queue, claimed, self.command, stop=stop,
                                              grace=self.grace, timeout=self.timeout)
        state, cause = judge(status, killed_because)
        # Exit-Status only for a command that ended by itself.
        metadata = {} if killed_because else {"Exit-Status": status}
        if state != "done":
            metadata["Last-Error"] = cause
        return Handed(state, cause, metadata)

    def finished(self, queue, claimed, handed, target):
        if target is not None:
            _log_outcome(queue, claimed, target, handed.cause)


@dataclass(frozen=True)
class Posted(Handed):
    """A webhook's hand-over: a Handed with the POST's Answer (None: nothing was POSTed)."""

    answer: Answer | None = None


class WebhookConsumer:
    """Hands a message over as one signed POST (swiftdrop.webhook) and judges the answer.

    One per process, shared by its worker loops; each loop's queue brings
    its own Swift connection, for the objects a JSON payload links to.
    """

    def __init__(self, destination, settings):
        self.settings, self.section = settings, destination.section
        self.url = public_url(settings.url)
        # Each container's TempURL key (a shard container has its own), looked up
        # before its first link.
        self._keys = {}
        metrics.known_webhook(self.section)

    def hand_over(self, queue, claimed, stop):
        try:
            body, content_type, fields = self._request(queue, claimed)
        except environmental_errors(queue) as error:
            cause = shortened(f"cannot store the objects the payload links to: "
                               f"{describe_failure(error)}")
            return Posted("retry", cause, {"Last-Error": cause})
        answer = post(self.settings, body,
                      request_headers(self.settings, body, content_type, fields))
        metrics.webhook_posted(self.section, answer.outcome, answer.seconds)
        # A lock lost during the POST shows at the finish, which refuses (LostLock).
        metadata = {} if answer.state == "done" else {"Last-Error": answer.reason}
        return Posted(answer.state, answer.reason, metadata, answer.retry_after, answer)

    def _request(self, queue, claimed):
        """(body, Content-Type, X-SwiftDrop-* headers) of the POST, as the format says."""
        fields = identity_headers(queue.container, claimed)
        if self.settings.format == "raw":
            return claimed.body, "message/rfc822", {**fields, **raw_headers(claimed)}
        if queue.container not in self._keys:
            self._keys[queue.container] = tempurl_key(queue.connection, queue.container,
                                                      self.settings.tempurl_key)
        links = Links(queue.connection, queue.container, self._keys[queue.container],
                      self.settings.link_lifetime)
        body = json_body(queue.container, claimed, links, self.settings.inline_limit)
        return body, "application/json", fields

    def finished(self, queue, claimed, handed, target):
        """One journal entry per POST, for ``swiftdrop status``; the delivered and dead counts."""
        metrics.webhook_finished(self.section, target)
        answer = handed.answer
        if answer is None:
            log.warning("%s -> %s (%s; attempt %d of %d)", claimed.name, target or "recover",
                        handed.cause, claimed.attempts + 1, queue.settings.max_attempts)
            return
        result = "retry" if target in (None, "retry/") else target.rstrip("/")
        shown = str(answer.status) if answer.status else answer.reason
        if result == "done" or answer.state == "failed":
            summary = result  # done, or refused for good (406, 410)
        elif target is None:
            summary = "retry: not finished, recover returns it"
        else:
            summary = f"{result}, attempt {claimed.attempts + 1} of " \
                      f"{queue.settings.max_attempts}"
        fields = {"SWIFTDROP_WEBHOOK_RESULT": result, "SWIFTDROP_WEBHOOK_OUTCOME": answer.outcome,
                  "SWIFTDROP_WEBHOOK_STATUS": str(answer.status or ""),
                  "SWIFTDROP_WEBHOOK_MS": round(answer.seconds * 1000),
                  "SWIFTDROP_WEBHOOK_URL": self.url, "SWIFTDROP_OBJECT": claimed.name,
                  "SWIFTDROP_CONTAINER": queue.container, "SWIFTDROP_SECTION": self.section}
        if result != "done":
            fields["SWIFTDROP_REASON"] = answer.reason
        level = {"done": logging.INFO, "retry": logging.WARNING}.get(result, logging.ERROR)
        log.log(level, "POST %s to %s: %s (%s)", claimed.name, self.url, shown, summary,
                extra=fields)


def judge(status, killed_because=None):
    """(state, cause) of one run of the command: its exit status as a contract.

    0 is done; 65 (EX_DATAERR) is failed, the one permanent failure;
    anything else is a retry: 75 asks for one, and a crash (1, 2, a Go
    panic, a Node exception, a signal such as the OOM killer's SIGKILL) or
    a timeout tells about that run, not about the message. The cause is
    what a person reads: ``exit status 1``, ``killed by SIGKILL``, or why
    the worker killed it (`killed_because`).
    """
    if killed_because:
        return "retry", killed_because
    cause = describe_status(status)
    if status == 0:
        return "done", cause
    return ("failed" if status == EX_DATAERR else "retry"), cause


def describe_status(status):
    """An exit status in words: ``exit status 3``, ``killed by SIGKILL``.

    subprocess reports a command killed by a signal as minus the signal's number.
    """
    if status >= 0:
        return f"exit status {status}"
    try:
        return f"killed by {signal.Signals(-status).name}"
    except ValueError:  # a real-time signal has no name
        return f"killed by signal {-status}"


def _log_outcome(queue, claimed, target, cause):
    """done at info, a retry at warning, failed/ at err: what needs a person, louder."""
    if target == "done/":
        log.info("%s -> done/", claimed.name)
    elif target == "retry/":
        log.warning("%s -> retry/ (%s; attempt %d of %d)", claimed.name, cause,
                    claimed.attempts + 1, queue.settings.max_attempts)
    else:
        log.error("%s -> %s (%s)", claimed.name, target, cause)


def _finish(queue, claimed, handed, *, stop, failing):
    """queue.finish as `handed` asks, tried again for a lease's time; None if it never went through.

    Each try goes on with the lock the claim took, which the heartbeat keeps.
    Giving up leaves the message in processing/ under a lock left to run
    out: recover then moves it to retry/, so the consumer may see it once
    more (redelivered), but it is never lost.
    """
    state = handed.state
    give_up = time.monotonic() + queue.settings.lease
    backoff = FIRST_BACKOFF
    while True:
        try:
            return queue.finish(claimed, state, handed.metadata,
                                reason=None if state == "done" else handed.cause,
                                wait_at_least=handed.wait_at_least)
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


def _run_command(queue, claimed, command, *, stop, grace, timeout):
    """(exit status, why the worker killed it or None) of `command` fed with the message.

    The command runs in a session of its own, so that a timeout's SIGTERM
    and SIGKILL reach what it started too (a shell's children). Raises
    LostLock when the heartbeat finds the lock gone meanwhile.
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
                   SWIFTDROP_REPLAYED=str(claimed.replayed),
                   SWIFTDROP_MAIL_FROM=metadata.get("mail-from", ""),
                   **recipient_environment(claimed.recipients, rcpt_file.name),
                   SWIFTDROP_MESSAGE_ID=metadata.get("message-id", ""),
                   SWIFTDROP_DEDUP_MD5=claimed.dedup_md5,
                   **verdict_environment(metadata))
        return _watch(queue, claimed, command, env, stop=stop, grace=grace,
                      timeout=timeout)


def recipient_environment(recipients, path):
    """SWIFTDROP_RCPT_TO (one address a line), _RCPT_COUNT and _RCPT_FILE.

    An environment string may not exceed 128 KiB (Linux's MAX_ARG_STRLEN):
    a list longer than MAX_RCPT_ENV leaves SWIFTDROP_RCPT_TO empty, and
    SWIFTDROP_RCPT_FILE, the same list in a file, always holds all of them.
    """
    listed = "\n".join(recipients)
    return {"SWIFTDROP_RCPT_TO": listed if len(listed.encode()) <= MAX_RCPT_ENV else "",
            "SWIFTDROP_RCPT_COUNT": str(len(recipients)), "SWIFTDROP_RCPT_FILE": path}


def _watch(queue, claimed, command, env, *, stop, grace, timeout):
    """Run `command` to its end, checking the lock: (exit status, why we killed it or None)."""
    process = subprocess.Popen(command, stdin=subprocess.PIPE, env=env, start_new_session=True)
    started = time.monotonic()
    stdin, stopping_since, killed_because, kill_at = claimed.body, None, None, None
    while True:
        try:
            process.communicate(input=stdin, timeout=WATCH)
            return process.returncode, killed_because
        except subprocess.TimeoutExpired:
            stdin = None  # already handed over; communicate() keeps feeding it
        now = time.monotonic()
        if kill_at is not None and now >= kill_at:
            _signal_session(process, signal.SIGKILL)
            kill_at = None
        if killed_because is None and stop.is_set():
            stopping_since = stopping_since or now
            if now - stopping_since > grace:
                killed_because = f"still running {grace:g} s after the worker was stopped"
                _signal_session(process, signal.SIGKILL)
        if killed_because is None and timeout and now - started > timeout:
            killed_because = f"timed out after {timeout:g} s"
            _signal_session(process, signal.SIGTERM)
            kill_at = now + TERM_GRACE
        queue.check(claimed)


def _signal_session(process, signum):
    """Send `signum` to the command and all it started; one gone already is fine."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass
