"""The webhook under a receiver that misbehaves on purpose: workers -> HTTPS -> FaultyReceiver.

The Swift, the seeding, the worker supervisor, ``recover`` every second and
the settle wait are the consumer fault rig's (tests/consumer_faults/rig.py);
what differs is the consumer: no COMMAND, the ini's ``webhook_url``, a
:class:`~tests.support.webhook_receiver.FaultyReceiver` that answers 2xx,
500, 503, 429 (some with Retry-After), 406 for messages chosen up front,
hangs past ``webhook_timeout``, answers slowly under it, resets the
connection, and for a few seconds presents a certificate the worker's
``webhook_cacert`` does not trust. The books (tests/webhook_faults/books.py)
then say whether every message got through, or was refused for good, and
whether every repeat was marked.
"""

from __future__ import annotations

from dataclasses import dataclass
import pathlib
import random
import threading
import time

from swiftclient.exceptions import ClientException

from tests.consumer_faults.rig import (
    SEED_RATE,
    SETTLE,
    Workers,
    recover_every_second,
    seed,
    wait_until,
)
from tests.support.tlsfront import TestCA, openssl
from tests.support.webhook_receiver import FaultyReceiver, Policy
from tests.webhook_faults.books import classify, read_posts

SECRET = "webhook-faults-secret"
# Longer than the consumer rig's 12 s: on a loaded machine a claim whose lock
# PUT took 3 s has less than one whole request left of 12 and gives the
# message up (rightly); here that would only slow every message down.
LEASE = 30
WEBHOOK_TIMEOUT = 2  # a hang outlasts it, a slow answer stays under it
# Quick retries (back-off 0.25 s doubling, at most 2 s, Retry-After up to 2 s
# honoured), and enough of them that no draw of the policy plus the wrong
# certificate's seconds can use them all up: failed/ for a message not
# refused is a lost one.
RETRY_DELAY, RETRY_LONGEST, MAX_ATTEMPTS = 0.25, 2, 25
REFUSED_SHARE = 0.05
WRONG_CERTIFICATE_SECONDS, WRONG_CERTIFICATE_HANDSHAKES, WRONG_CERTIFICATE_LONGEST = 3, 3, 60
# Nothing here kills a worker: recover has only locks lost on a loaded
# machine to return, and each run is a Python start the workers wait for.
RECOVER_EVERY = 10
# Fewer, slower-polling loops than the consumer rig's: on a loaded 2-core
# machine six loops listing cur/ twice a second cost Swift more CPU than the
# POSTs; a due retry still waits at most a second.
PROCESSES, LOOPS, POLL = 2, 2, 1.0
# Two POSTs a message on average, each a claim and a finish: on the loaded
# test machine a 1,000-message run took 20 minutes to seed and POST half.
SETTLE_PER_MESSAGE = 3
SEEDING_SECONDS = 5  # at least: the wrong certificate must land while messages still arrive


def certificates(directory):
    """(CA file the worker trusts, the receiver's cert and key, a self-signed cert and key)."""
    directory = pathlib.Path(directory)
    ca = TestCA(directory / "trusted")
    trusted = ca.issue("receiver", "IP:127.0.0.1")
    wrong = directory / "wrong.pem", directory / "wrong.key"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", wrong[1], "-out", wrong[0], "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", cwd=directory)
    return ca.cert, trusted, wrong


@dataclass
class Result:
    books: object
    refused_handshakes: int  # POSTs the wrong certificate stopped
    worker_starts: int
    recovers: int
    unsettled: int  # in neither done/ nor failed/ when the settle time ran out
    seconds: float

    def row(self):
        c, books = self.books.counts, self.books
        return (books.messages, c["once"], c["marked"], c["refused"], c["silent"], c["lost"],
                books.posts, books.repeats_after_2xx, self.refused_handshakes,
                books.bad_signatures, self.seconds)


def _listed(connection, container, prefix):
    _, objects = connection.get_container(container, prefix=prefix, full_listing=True)
    return {item["name"][len(prefix):] for item in objects}


def _last_errors(connection, container, names):
    errors = {}
    for name in names:
        try:
            headers = connection.head_object(container, "failed/" + name)
        except ClientException as error:
            if error.http_status != 404:
                raise
            continue
        errors[name] = headers.get("x-object-meta-last-error", "")
    return errors


def _wrong_certificate_phase(receiver, messages, stop):
    """Once a quarter as many POSTs as messages came, the untrusted certificate for a while.

    It stays on for WRONG_CERTIFICATE_SECONDS and until it refused
    WRONG_CERTIFICATE_HANDSHAKES handshakes (at most WRONG_CERTIFICATE_LONGEST
    seconds): a loaded machine must not let the fault pass unmet.
    """
    while receiver.post_count < max(1, messages // 4):
        if stop.wait(0.1):
            return
    started = time.monotonic()
    with receiver.wrong_certificate():
        while not stop.wait(0.1):
            lasted = time.monotonic() - started
            if lasted >= WRONG_CERTIFICATE_LONGEST or (
                    lasted >= WRONG_CERTIFICATE_SECONDS
                    and receiver.refused_handshakes >= WRONG_CERTIFICATE_HANDSHAKES):
                return


def run_ledger(rig, messages, *, seed_value=1, settle=None):
    """`messages` messages through the misbehaving receiver; the Result with its books.

    `settle` is how long, after the seeding, the messages may take to reach
    done/ or failed/ (default SETTLE_PER_MESSAGE each, at least SETTLE): a
    message still on its way then counts as lost, so it must be generous;
    the wait ends as soon as all are there.
    """
    settle = settle or max(SETTLE, SETTLE_PER_MESSAGE * messages)
    run_id = f"webhook-{seed_value}-{int(time.time())}"
    container = f"faults-{run_id}"
    workdir = rig.workdir / run_id
    workdir.mkdir()
    cacert, tls, wrong_tls = certificates(workdir)
    rng = random.Random(f"webhook-{seed_value}")
    refused_numbers = set(rng.sample(range(1, messages + 1),
                                     max(1, round(messages * REFUSED_SHARE))))
    policy = Policy(seed_value, WEBHOOK_TIMEOUT, refused=refused_numbers)
    ledger_path = workdir / "receiver.jsonl"
    stored = {}
    started = time.monotonic()
    with FaultyReceiver(SECRET, ledger_path, policy, tls, wrong_tls) as receiver:
        rig.swift.connection().put_container(container)
        # Straight to Swift: the rig's fault proxy would only add a hop here.
        ini = rig.write_ini(workdir / "swiftdrop.ini", container, "swift",
                            authurl=rig.swift.auth_url,
                            webhook_url=receiver.url, webhook_secret=SECRET,
                            webhook_format="raw", webhook_timeout=WEBHOOK_TIMEOUT,
                            webhook_cacert=cacert, queue_lease=LEASE,
                            queue_retry_delay=RETRY_DELAY,
                            queue_retry_longest=RETRY_LONGEST,
                            queue_max_attempts=MAX_ATTEMPTS)
        workers = Workers(ini, (), workdir / "workers.log", processes=PROCESSES, loops=LOOPS,
                          poll=POLL)
        stop, outcome = threading.Event(), {}
        threads = [
            threading.Thread(target=seed, args=(rig, container, messages), kwargs={
                "run": run_id, "rng": random.Random(seed_value), "stored": stored,
                "stop": stop, "rate": min(SEED_RATE, messages / SEEDING_SECONDS)}),
            threading.Thread(target=_wrong_certificate_phase,
                             args=(receiver, messages, stop)),
            threading.Thread(target=lambda: outcome.update(recovers=recover_every_second(
                ini, workdir / "recover.log", stop, every=RECOVER_EVERY)))]
        connection = rig.swift.connection(retries=5, timeout=10)
        workers.start()
        for thread in threads:
            thread.start()
        try:
            threads[0].join()
            waiting = wait_until(connection, container, set(stored), lambda: (
                _listed(connection, container, "done/")
                | _listed(connection, container, "failed/")), settle)
        finally:
            stop.set()
            workers.stop()
            for thread in threads:
                thread.join()
        refused_handshakes = receiver.refused_handshakes
    # The seeder stores message number n as the n-th name (dicts keep their order).
    names = list(stored)
    refused = {names[number - 1] for number in refused_numbers if number <= len(names)}
    done = _listed(connection, container, "done/")
    failed = _last_errors(connection, container, _listed(connection, container, "failed/"))
    books = classify(stored, refused, read_posts(ledger_path), done, failed)
    return Result(books, refused_handshakes, workers.starts - workers.processes,
                  outcome.get("recovers", 0), len(waiting), round(time.monotonic() - started, 1))


HEADERS = ("messages", "once", "marked", "refused 406", "silent", "lost", "POSTs",
           "repeats after 2xx", "wrong-cert handshakes", "bad signatures", "seconds")


def table(results):
    rows = [HEADERS] + [tuple(str(v) for v in result.row()) for result in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
                     for row in rows)


def details(result):
    """What explains the figures: what the receiver did how often, the first bad cases."""
    books = result.books
    behaviours = ", ".join(f"{label} {count}" for label, count in
                           sorted(books.behaviours.items()))
    lines = [f"{books.messages} messages in {result.seconds} s: "
             + ", ".join(f"{kind} {count}" for kind, count in books.counts.items()),
             f"  POSTs {books.posts}: {behaviours}",
             f"  handshakes refused by the wrong certificate {result.refused_handshakes}, "
             f"repeats after a 2xx {books.repeats_after_2xx}, bad signatures "
             f"{books.bad_signatures}, bodies not the stored message {books.corrupt}, "
             f"POSTs of no stored message {books.strays}, worker restarts "
             f"{result.worker_starts}, recover runs {result.recovers}, unsettled "
             f"{result.unsettled}"]
    for kind, examples in books.examples.items():
        for name, last_error, posts in examples:
            lines.append(f"  {kind}: {name} (Last-Error {last_error!r}; delivery, "
                         f"redelivered, behaviour, status): {posts}")
    return "\n".join(lines)
