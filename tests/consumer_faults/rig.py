"""The consumer side under fire: workers -> fault proxy -> Swift, recover every second.

:class:`Rig` starts a real Swift of its own (faults kill it), the
:class:`~tests.consumer_faults.proxy.ConsumerProxy` in front of it and, for
the Redis lock, a redis-server of its own on a reserved loopback port; for
the stream index another, with its append-only file as the role's has it.
:func:`run_class` then seeds numbered messages straight into ``cur/`` (as
the filter stores them: Maildir names, the filter's metadata), runs several
``swiftdrop queue run`` processes under a supervisor that starts a killed
one again (as systemd's ``Restart=`` does), ``swiftdrop queue recover``
every second, and one fault class; it stops the fault once every message
was handed over at least once, waits until every message is in ``done/``
(or the settle time is up; with the stream index: finished as done in the
stream, and ``reconcile`` runs every two seconds), and settles the books
(:mod:`tests.consumer_faults.ledger`).

Everything is driven through the public CLI and Swift: nothing here knows
the queue's internals, so the suite runs unchanged against any version of
the queue that keeps the documented contract.
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
from dataclasses import dataclass, field
import hashlib
import io
import os
import pathlib
import random
import subprocess
import sys
import threading
import time

from swiftclient.exceptions import ClientException

from swiftdrop.naming import MaildirNamer
from swiftdrop.stream_index import IN_FLIGHT, StreamIndex, entry_fields, keys, redis_errors
from tests.consumer_faults.ledger import classify, read_ledger
from tests.consumer_faults.proxy import ConsumerProxy
from tests.support.filterproc import swiftdrop_command
from tests.support.redisserver import DEBIAN_SAVE, RedisServer
from tests.support.swiftserver import SwiftServer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CONSUMER = pathlib.Path(__file__).with_name("consumer.py")
DOMAIN = "consumer-faults.swiftdrop.test"
# One attempt 4 s, one retry: a request may take 9 s, the shortest lease is 12 s.
# (2 s per attempt starved every worker on a shared 2-core machine at load 15:
# the class then measures the machine, not the queue.)
TIMEOUT, RETRIES, LEASE = 4, 1, 12
# Quick retries, and enough of them that no fault here can use them all up:
# failed/ at the end is a lost message.
RETRY_DELAY, MAX_ATTEMPTS = 0.25, 12
WORKER_PROCESSES, LOOPS_PER_WORKER = 3, 2
RECOVER_EVERY, RECOVERS_AT_ONCE = 1.0, 2
RECONCILE_EVERY = 2.0
STREAM_GROUP = "default"  # what the workers use without --group
SEED_RATE = 40  # messages a second into cur/
SETTLE = 240
SWIFT_STARTS = 3  # seconds after the fault for every message to reach done/


class Rig:
    """Swift, the proxy and (started on first use) Redis; one container per run."""

    def __init__(self, workdir):
        self.workdir = pathlib.Path(workdir)
        self.stack = contextlib.ExitStack()
        self.redis = None
        self.stream_redis = None
        self.swift_lock = threading.Lock()  # the seeder's PUTs and Swift's kills take turns

    def __enter__(self):
        try:
            self.swift = self.stack.enter_context(SwiftServer(self.workdir / "swift"))
            self.proxy = self.stack.enter_context(ConsumerProxy(self.swift.port))
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc):
        self.stack.close()

    def use_redis(self):
        if self.redis is None:
            self.redis = self.stack.enter_context(
                RedisServer(self.workdir / "redis", save=DEBIAN_SAVE))
        return self.redis

    def use_stream_redis(self):
        if self.stream_redis is None:
            self.stream_redis = self.stack.enter_context(
                RedisServer(self.workdir / "stream-redis", appendonly=True))
        return self.stream_redis

    def kill_stream_redis(self):
        """SIGKILL the index's Redis and start it again: what it had is its append-only file."""
        self.stream_redis.kill()
        self.stream_redis.start()

    def write_ini(self, path, container, lock, index="listing", **keys):
        """The run's ini; `keys` are more [DEFAULT] keys, or ones to put in place of ours."""
        settings = {"recipient": "DEFAULT", "container": container, "auth_version": 1,
                    "authurl": self.proxy.auth_url, "user": "test:tester", "key": "testing",
                    "timeout": TIMEOUT, "retries": RETRIES, "queue_lease": LEASE,
                    "queue_retry_delay": RETRY_DELAY, "queue_max_attempts": MAX_ATTEMPTS,
                    "queue_lock": lock}
        if lock == "redis":
            settings["queue_redis_url"] = self.use_redis().url
        if index == "redis-stream":
            settings["queue_index"] = index
            settings["queue_redis_url"] = self.use_stream_redis().url
        settings.update(keys)
        path.write_text("[DEFAULT]\n" + "".join(f"{key} = {value}\n"
                                                for key, value in settings.items()))
        path.chmod(0o640)
        return path

    def kill_swift(self):
        """SIGKILL Swift (never in the middle of a seeding PUT) and start it again.

        A loaded machine can take longer than the start's timeout: try again
        rather than leave Swift down for the rest of the run.
        """
        with self.swift_lock:
            self.swift.kill()
            for _ in range(SWIFT_STARTS):
                try:
                    self.swift.start(timeout=60)
                    return
                except (RuntimeError, TimeoutError):
                    self.swift.kill()
            raise RuntimeError(f"Swift did not start {SWIFT_STARTS} times running")


# The consumer's fault is for the messages that carry this header, on their
# first hand-over: chosen up front, a short run surely has some.
FAULT_HEADER = "X-Consumer-Fault: yes"


def message_bytes(number, run, rng, faulted=False):
    head = (f"Received: from client.{DOMAIN} by mx.{DOMAIN}; Thu, 26 Nov 2026 00:00:00 +0000\r\n"
            + (f"{FAULT_HEADER}\r\n" if faulted else "")
            + f"From: <sender@{DOMAIN}>\r\nTo: <someone@example.com>\r\n"
            f"Subject: consumer fault run {run} message {number}\r\n"
            f"Message-ID: <{number}.{run}@{DOMAIN}>\r\n\r\n").encode()
    return head + rng.randbytes(rng.randint(300, 6000)).hex().encode() + b"\r\n"


def seed(rig, container, messages, *, run, rng, stored, stop, rate=SEED_RATE,
         faulted=frozenset(), index=None):
    """Put `messages` into cur/ as the filter does, `rate` a second; names -> sha256.

    The message numbers in `faulted` carry the consumer's FAULT_HEADER.
    With a stream `index`, each is announced after its PUT, as the filter
    does; one that cannot be (Redis away) is left to ``reconcile``. Its
    names are then dated IN_FLIGHT back: a copy the filter could not
    announce reaches the reconciler that much later, which a run need not
    wait for.
    """
    connection = rig.swift.connection(retries=5, timeout=10)
    if index is None:
        namer = MaildirNamer(hostname=f"mx.{DOMAIN}")
    else:
        namer = MaildirNamer(hostname=f"mx.{DOMAIN}", clock=lambda: time.time_ns() - int(
            (IN_FLIGHT + 5) * 1e9))
    for number in range(1, messages + 1):
        if stop.is_set():
            return
        data = message_bytes(number, run, rng, number in faulted)
        name = namer.name(len(data))
        metadata = {"Mail-From": f"<sender@{DOMAIN}>", "Rcpt-To": "someone@example.com",
                    "Rcpt-Count": "1", "Message-Id": f"<{number}.{run}@{DOMAIN}>",
                    "Received-By": f"mx.{DOMAIN}", "Client-Address": "127.0.0.1",
                    "Dedup-Md5": hashlib.md5(data.split(b"\r\n", 1)[1],
                                             usedforsecurity=False).hexdigest()}
        headers = {"If-None-Match": "*",
                   **{f"X-Object-Meta-{key}": value for key, value in metadata.items()}}
        with rig.swift_lock:
            try:
                # A file, not bytes: swiftclient resends only what it can seek back on.
                connection.put_object(container, name, io.BytesIO(data),
                                      content_length=len(data),
                                      content_type="message/rfc822", headers=headers)
            except ClientException as error:
                if error.http_status != 412:  # 412: an attempt that timed out had stored it
                    raise
        rig.proxy.note_created(container, name)
        if index is not None:
            with contextlib.suppress(*redis_errors()):
                index.announce(entry_fields(
                    name[len("cur/"):], container, size=len(data),
                    envelope={"mail_from": f"<sender@{DOMAIN}>",
                              "rcpt_to": ["someone@example.com"]}))
        stored[name[len("cur/"):]] = hashlib.sha256(data).hexdigest()
        time.sleep(1 / rate)


class Workers:
    """``swiftdrop queue run`` processes, each started again when it dies (Restart=always).

    `consumer` is what follows ``run``'s options: ``("--", COMMAND, ...)``,
    or nothing for the ini's webhook (tests/webhook_faults).
    """

    def __init__(self, ini, consumer, log_path, *, processes=WORKER_PROCESSES,
                 loops=LOOPS_PER_WORKER, poll=0.5):
        self.command = [*swiftdrop_command("queue", "--config", str(ini), "run",
                                           "--concurrency", str(loops),
                                           "--poll", str(poll), "--grace", "5"), *consumer]
        self.processes = processes
        self.log_path = log_path
        self.lock = threading.Lock()
        self.running = {}  # pid -> Popen
        self.starts = 0
        self.stopping = False
        self.threads = [threading.Thread(target=self._keep_one, daemon=True)
                        for _ in range(processes)]

    def start(self):
        for thread in self.threads:
            thread.start()
        return self

    def _keep_one(self):
        while True:
            with self.lock:
                if self.stopping:
                    return
                with open(self.log_path, "ab") as log:
                    process = subprocess.Popen(self.command, stdout=log, stderr=log,
                                               cwd=REPO_ROOT, env=dict(os.environ,
                                                                       PYTHONUNBUFFERED="1"))
                self.running[process.pid] = process
                self.starts += 1
            process.wait()
            with self.lock:
                self.running.pop(process.pid, None)
            time.sleep(0.2)

    def kill(self, pid):
        """SIGKILL one of our workers by its pid; False if it is not (or no longer) ours."""
        with self.lock:
            process = self.running.get(pid)
            if process is None or process.poll() is not None:
                return False
            process.kill()
            return True

    def kill_any(self, rng):
        with self.lock:
            pids = sorted(self.running)
        return bool(pids) and self.kill(rng.choice(pids))

    def stop(self):
        with self.lock:
            self.stopping = True
            processes = list(self.running.values())
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for thread in self.threads:
            thread.join(30)


def recover_every_second(ini, log_path, stop, every=RECOVER_EVERY, action="recover"):
    """``swiftdrop queue recover`` (or `action`) every `every` seconds, RECOVERS_AT_ONCE at most."""
    running = []
    runs = 0
    with open(log_path, "ab") as log:
        while not stop.wait(every):
            running = [process for process in running if process.poll() is None]
            if len(running) < RECOVERS_AT_ONCE:
                running.append(subprocess.Popen(
                    swiftdrop_command("queue", "--config", str(ini), action),
                    stdout=log, stderr=log, cwd=REPO_ROOT))
                runs += 1
        for process in running:
            process.wait(60)
    return runs


@dataclass
class FaultClass:
    """One kind of fault: its lock, its consumer's behaviour, and the loop that injects it.

    ``inject(run)`` runs in a thread until ``run.fault_over`` is set and
    returns how many faults it injected; `consumer_args` are the consumer's
    (its fault, for the messages marked with FAULT_HEADER). `share` is how
    many of the requests or messages a fault hits (a short run raises it,
    so that the fault surely happens).
    `seeding_seconds` is how long seeding lasts at least: a fault on a timer
    must land while messages are still arriving, or a short run is handed
    over before the first fault and tests nothing. `kills_workers` says the
    fault itself kills workers; under any other fault a worker must ride it
    out, never exit.
    """

    name: str
    description: str
    inject: Callable
    lock: str = "swift"
    index: str = "listing"
    consumer_args: tuple = ()
    share: float = 0.0
    seeding_seconds: float = 0.0
    kills_workers: bool = False


@dataclass
class Run:
    rig: Rig
    container: str
    ledger_path: pathlib.Path
    workers: Workers
    rng: random.Random
    share: float
    fault_over: threading.Event = field(default_factory=threading.Event)


def _consumer_faults(run):
    """Faults the consumer itself makes (it notes them in the ledger)."""
    run.fault_over.wait()
    return sum(bool(h.fault) for h in read_ledger(run.ledger_path))


def _every(low, high, action):
    def inject(run):
        count = 0
        while not run.fault_over.wait(run.rng.uniform(low, high)):
            if action(run) is not False:
                count += 1
        return count
    return inject


def _swift_killed(run):
    run.rig.kill_swift()


def _redis_restarted(run):
    run.rig.redis.restart()


def _stream_redis_killed(run):
    run.rig.kill_stream_redis()


def _trickle(run):
    proxy = run.rig.proxy
    before = proxy.trickled
    proxy.trickle_bytes, proxy.trickle_share = TRICKLE_SECONDS, run.share
    run.fault_over.wait()
    proxy.clear()
    return proxy.trickled - before


def _listing_lag(run):
    proxy = run.rig.proxy
    before = proxy.hidden
    proxy.listing_lag = LISTING_LAG
    run.fault_over.wait()
    proxy.clear()
    return proxy.hidden - before


def _kill_workers_at_finish(run):
    """SIGKILL the worker of a finish: before its copy to done/, after it, after its delete."""
    kills = []

    def hook(method, path, moment):
        state = "/done/" if method == "PUT" else "/processing/" if method == "DELETE" else None
        if (state is None or state not in path or "/locks/" in path
                or run.rng.random() >= run.share):
            return None
        name = path.split(state, 1)[1]
        if method == "DELETE" and moment == "before":
            return None
        holders = [h.worker for h in read_ledger(run.ledger_path) if h.name == name]
        if holders and run.workers.kill(holders[-1]):
            kills.append((method, moment))
            return "drop" if moment == "before" else None
        return None

    run.rig.proxy.hook = hook
    run.fault_over.wait()
    run.rig.proxy.clear()
    return len(kills) + _consumer_faults(run)


LISTING_LAG = 3.0
TRICKLE_SECONDS = (1, LEASE + 4)  # a byte a second: up to past the lease
CLASSES = {fault.name: fault for fault in [
    # Up 4-8 s between kills: a worker backs off (1 s, doubling) while Swift is
    # away, and Swift takes seconds to start on a loaded machine.
    FaultClass("swift-killed", "Swift SIGKILLed and started again, up 4-8 s between kills",
               _every(4, 8, _swift_killed), seeding_seconds=10),
    FaultClass("swift-slow", "of object answers, a share trickles a byte a second for "
               f"{TRICKLE_SECONDS[0]}-{TRICKLE_SECONDS[1]} s",
               _trickle, share=0.03),
    FaultClass("short-lease", f"lease {LEASE} s; a share of messages' first commands run "
               f"{LEASE + 1}-{2 * LEASE} s", _consumer_faults, share=0.03,
               consumer_args=("--sleep-range", str(LEASE + 1), str(2 * LEASE))),
    FaultClass("workers-killed", "a share of messages' first commands SIGKILL their worker; "
               "a share of "
               "finish requests: the worker SIGKILLed before, or after Swift answered",
               _kill_workers_at_finish, share=0.02, kills_workers=True,
               consumer_args=("--kill-worker",)),
    FaultClass("listing-lag", f"container listings {LISTING_LAG:g} s behind object "
               "creations and deletions", _listing_lag),
    FaultClass("redis-restarted", "queue_lock = redis; redis-server restarted every 3-6 s",
               _every(3, 6, _redis_restarted), lock="redis", seeding_seconds=8),
    FaultClass("stream-redis-killed", "queue_index = redis-stream; its redis-server "
               "(appendfsync always) SIGKILLed and started again every 3-6 s",
               _every(3, 6, _stream_redis_killed), index="redis-stream", seeding_seconds=8),
    FaultClass("stream-workers-killed", "queue_index = redis-stream; a share of messages' "
               "first commands SIGKILL their worker", _consumer_faults, share=0.02,
               kills_workers=True, consumer_args=("--kill-worker",), index="redis-stream"),
]}


@dataclass
class Result:
    name: str
    books: object
    injected: int
    worker_starts: int
    recovers: int
    unsettled: int  # not in done/ when the settle time ran out
    seconds: float

    def row(self):
        c = self.books.counts
        return (self.name, self.books.messages, c["once"], c["marked"], c["silent"],
                c["lost"], self.seconds)


def _exists(connection, container, path):
    try:
        connection.head_object(container, path)
    except ClientException as error:
        if error.http_status != 404:
            raise
        return False
    return True


def _in_done(connection, container, names):
    """Which of `names` are in done/, asked one by one (a listing can lag a killed Swift)."""
    return {name for name in names if _exists(connection, container, "done/" + name)}


def _done_in_stream(client, container, names):
    """Which of `names` the workers' group finished as done: announced, read, not pending.

    Asked as any Redis client would (docs/stream-index.md), not through the queue's code;
    a dead letter (failed/ at the end) is not done.
    """
    stream = keys(container)["stream"]
    try:
        groups = {group["name"]: group for group in client.xinfo_groups(stream)}
        if STREAM_GROUP not in groups:
            return set()
        read_up_to = groups[STREAM_GROUP]["last-delivered-id"]
        letters = set(client.hkeys(f"swiftdrop:{{{container}}}:group:{STREAM_GROUP}:failed"))
        ids = dict(zip(names, client.hmget(keys(container)["announced"], list(names)),
                       strict=True)) if names else {}
        done = set()
        for name, entry_id in ids.items():
            if entry_id is None or entry_id in letters or _id_after(entry_id, read_up_to):
                continue
            if not client.xpending_range(stream, STREAM_GROUP, entry_id, entry_id, 1):
                done.add(name)
        return done
    except redis_errors():  # Redis being started again: ask the next time round
        return set()


def _id_after(entry_id, other):
    def parts(value):
        milliseconds, _, sequence = value.partition("-")
        return int(milliseconds), int(sequence or 0)
    return parts(entry_id) > parts(other)


def _nowhere(connection, container, names):
    """Which of `names` are in none of cur/, retry/, processing/, done/: no worker can get them."""
    return {name for name in names
            if not any(_exists(connection, container, prefix + name)
                       for prefix in ("cur/", "retry/", "processing/", "done/"))}


def wait_until(connection, container, names, settled, settle):
    """Wait until `settled()` holds for all `names`, or the ones left exist nowhere twice running.

    Returns the names still not settled: a message that is gone from every
    state cannot settle, and waiting for it would only burn the settle time.
    """
    deadline = time.monotonic() + settle
    left_before, gone_before = None, set()
    while time.monotonic() < deadline:
        left = names - settled()
        if not left:
            return left
        # Only when nothing moved on: HEADs of every waiting name would load Swift.
        gone = _nowhere(connection, container, left) if left == left_before else set()
        if gone and gone == left and gone == gone_before:
            return left
        left_before, gone_before = left, gone
        time.sleep(2)
    return names - settled()


def run_class(rig, name, messages, *, seed_value=1, settle=SETTLE, least_hits=0):
    """One fault class over `messages` messages; the Result with its books.

    `least_hits` raises the fault's share so that about that many messages meet it.
    """
    fault = CLASSES[name]
    share = max(fault.share, min(0.5, least_hits / messages)) if fault.share else 0.0
    rng = random.Random(f"{name}-{seed_value}")
    run_id = f"{name}-{seed_value}-{int(time.time())}"
    container = f"consumer-{run_id}"
    workdir = rig.workdir / run_id
    workdir.mkdir()
    rig.swift.connection().put_container(container)
    ini = rig.write_ini(workdir / "swiftdrop.ini", container, fault.lock, fault.index)
    streamed = fault.index == "redis-stream"
    index = StreamIndex(rig.stream_redis.url, container) if streamed else None
    ledger_path = workdir / "ledger.jsonl"
    ledger_path.touch()
    workers = Workers(ini, ("--", sys.executable, str(CONSUMER), str(ledger_path),
                            *fault.consumer_args), workdir / "workers.log")
    faulted = frozenset(rng.sample(range(1, messages + 1), max(1, round(share * messages)))) \
        if fault.consumer_args else frozenset()
    run = Run(rig, container, ledger_path, workers, rng, share)
    stored = {}
    started = time.monotonic()
    outcome = {}
    seeding_stop, recover_stop = threading.Event(), threading.Event()
    seeder = threading.Thread(target=seed, args=(rig, container, messages), kwargs={
        "run": run_id, "rng": random.Random(seed_value), "stored": stored,
        "stop": seeding_stop, "faulted": faulted, "index": index,
        "rate": min(SEED_RATE, messages / fault.seeding_seconds) if fault.seeding_seconds
        else SEED_RATE})
    injector = threading.Thread(target=lambda: outcome.update(injected=fault.inject(run)))
    recoverer = threading.Thread(target=lambda: outcome.update(recovers=recover_every_second(
        ini, workdir / "recover.log", recover_stop)))
    reconciler = threading.Thread(target=recover_every_second, args=(
        ini, workdir / "reconcile.log", recover_stop, RECONCILE_EVERY, "reconcile"))
    connection = rig.swift.connection(retries=5, timeout=10)
    workers.start()
    threads = (seeder, injector, recoverer, reconciler) if streamed else \
        (seeder, injector, recoverer)
    for thread in threads:
        thread.start()
    try:
        seeder.join()
        # The fault lasts until every message was handed over at least once.
        wait_until(connection, container, set(stored),
              lambda: {h.name for h in read_ledger(ledger_path)}, settle)
        run.fault_over.set()
        injector.join()
        in_done = set()

        def finished(left):
            if streamed:
                return _done_in_stream(index.client, container, left)
            return _in_done(connection, container, left)
        waiting = wait_until(connection, container, set(stored), lambda: in_done.update(
            finished(set(stored) - in_done)) or in_done, settle)
    finally:
        seeding_stop.set()
        run.fault_over.set()
        recover_stop.set()
        workers.stop()
        recoverer.join()
        if streamed:
            reconciler.join()
        injector.join()
    done = set(stored) - waiting
    books = classify(stored, read_ledger(ledger_path), done)
    return Result(name, books, outcome.get("injected", 0), workers.starts - WORKER_PROCESSES,
                  outcome.get("recovers", 0), len(waiting),
                  round(time.monotonic() - started, 1))


HEADERS = ("class", "messages", "once", "redelivered+marked", "silent duplicates", "lost",
           "seconds")


def table(results):
    rows = [HEADERS] + [tuple(str(v) for v in result.row()) for result in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    return "\n".join("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(row, widths, strict=True)))
                     for row in rows)


def details(result):
    """What explains one class's figures: faults injected, restarts, the first bad cases."""
    books = result.books
    counts = ", ".join(f"{kind} {count}" for kind, count in books.counts.items())
    lines = [f"{result.name}: {CLASSES[result.name].description}",
             f"  {books.messages} messages: {counts}; {result.seconds} s",
             f"  hand-overs {books.hand_overs}, faults injected {result.injected}, "
             f"worker restarts {result.worker_starts}, recover runs {result.recovers}, "
             f"not in done/ at the end {result.unsettled}, corrupt hand-overs "
             f"{books.corrupt_hand_overs}, hand-overs of no stored message {books.strays}"]
    for kind, examples in books.examples.items():
        for name, hand_overs in examples:
            lines.append(f"  {kind}: {name} (delivery, redelivered, worker): {hand_overs}")
    return "\n".join(lines)

