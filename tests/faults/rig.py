"""The deployed path under fire: sender -> Postfix -> filter -> fault proxy -> Swift.

:class:`Rig` starts a real Swift (its own, since faults stop and kill it),
with tempauth or behind a real Keystone (``auth="password"`` or
``"application-credential"``: the filter authenticates with Keystone
directly and reaches Swift through the proxy by ``object_storage_url``),
the :class:`~tests.faults.faultproxy.FaultProxy` in front of it, the filter
under the :class:`~tests.faults.supervisor.SupervisedFilter` (socket held,
restarted when it dies), spooling to a small tmpfs, and a private Postfix
with the filter as ``smtpd_proxy_filter``. :func:`run_scenario` sends a
numbered stream through Postfix while a scheduler injects faults, retries
every deferred message once the faults are over, as a sending MTA would, and
settles the :class:`~tests.faults.ledger.Ledger` against Swift.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
import concurrent.futures
import contextlib
from dataclasses import dataclass
import errno
import os
import pathlib
import random
import re
import smtplib
import subprocess
import threading
import time

from tests.faults import tokens
from tests.faults.faultproxy import FaultProxy
from tests.faults.ledger import NO_REPLY, Ledger
from tests.faults.supervisor import SupervisedFilter
from tests.support.keystone import KeystoneServer
from tests.support.postfix import postfix_instance
from tests.support.swiftserver import SwiftServer
from tests.support.webhook import Webhook

RECIPIENT = "someone@example.com"
SENDER = "sender@faults.swiftdrop.test"
# Per attempt 2 s, 3 attempts, 8 s per message: Swift answering 1 s later than
# the timeout is "past the filter's timeout", and Postfix (smtpd_proxy_timeout
# 100 s) always gets a reply. Behind Keystone an attempt gets 6 s: Swift asks
# Keystone about every new token, and a loaded Keystone is slower than tempauth.
# After a revocation it answers eight validations at once, each with a logged
# traceback, then a bcrypt authentication: with Molecule's guests beside it, a
# full run once saw that authentication pass 4 s and two messages get a 451.
HTTP_TIMEOUT, KEYSTONE_HTTP_TIMEOUT, RETRIES, STORE_TIMEOUT = 2, 6, 2, 8
SPOOL_SIZE = 16 * 1024 * 1024
SPOOL_LEFT_WHEN_FULL = 256 * 1024
BIG = (1100 * 1024, 1500 * 1024)  # over the filter's 256 KiB in-memory spool
SMALL = (600, 24 * 1024)
# Messages a fault that only some meet may let through before the sender meets it.
FELT_PATIENCE = 10
AUTHS = ("tempauth", "password", "application-credential")
AUTHENTICATIONS = re.compile(r"^swiftdrop: (INFO: authenticated |WARNING: authentication failed)",
                             re.MULTILINE)


class DataReplySMTP(smtplib.SMTP):
    """smtplib drops the final DATA reply's text; it names the stored object."""

    last_data_reply = (NO_REPLY, "")

    def data(self, msg):
        code, text = super().data(msg)
        self.last_data_reply = (code, text.decode(errors="replace"))
        return code, text


class Rig:
    """All the moving parts, started in order and stopped in reverse."""

    def __init__(self, workdir, sessions=4, auth="tempauth"):
        if auth not in AUTHS:
            raise ValueError(f"auth must be one of {AUTHS}")
        self.workdir = pathlib.Path(workdir)
        self.sessions = sessions
        self.auth = auth
        self.stack = contextlib.ExitStack()
        self.label = "none"  # the fault most recently injected, for the ledger
        self.spool_dir = None
        self.spool_filler = None  # (stop, thread, file) while spool-full holds
        self.filter = None
        self.keystone = None
        self.http_timeout = HTTP_TIMEOUT if auth == "tempauth" else KEYSTONE_HTTP_TIMEOUT
        self.ini = self.workdir / "swiftdrop.ini"

    def __enter__(self):
        try:
            if self.auth != "tempauth":
                self.keystone = self.stack.enter_context(
                    KeystoneServer(self.workdir / "keystone"))
            self.swift = self.stack.enter_context(
                SwiftServer(self.workdir / "swift", keystone=self.keystone))
            self.proxy = self.stack.enter_context(FaultProxy(self.swift.port))
            self.webhook = self.stack.enter_context(Webhook())
            self.spool_dir = self.stack.enter_context(small_tmpfs(self.workdir / "spool"))
            self.credentials = self.auth_settings()
            self.use_container("faults-setup")
            spool = ["--spool-dir", str(self.spool_dir)] if self.spool_dir else []
            # The ledger finds an object by the name its 250 gave: full reply text.
            self.filter = self.stack.enter_context(SupervisedFilter(
                self.ini, self.workdir, "--hostname", "mx.faults.swiftdrop.test",
                "--log-target", "stderr", "--store-timeout", str(STORE_TIMEOUT),
                "--reply-detail", "full", "--alert-webhook", self.webhook.url,
                "--alert-interval", "3600", *spool))
            self.postfix = self.stack.enter_context(postfix_instance(
                proxy_filter=f"inet:127.0.0.1:{self.filter.port}",
                relay_domains=["example.com"], recipients=[RECIPIENT],
                extra_main={"notify_classes": ""}))
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc):
        self.stack.close()

    def auth_settings(self):
        """The ini lines that authenticate the filter, for this rig's kind of auth."""
        if self.keystone is None:
            return (f"auth_version = 1\nauthurl = {self.proxy.auth_url}\n"
                    "user = test:tester\nkey = testing\n")
        mail = self.keystone.mail
        project_id = self.keystone.admin_client().projects.find(name=mail.project).id
        settings = (f"auth_version = 3\nauthurl = {self.keystone.auth_url}\n"
                    f"os_options_object_storage_url = {self.proxy.url}/v1/AUTH_{project_id}\n")
        if self.auth == "password":
            return settings + (f"user = {mail.user}\nkey = {mail.password}\n"
                               f"os_options_project_name = {mail.project}\n"
                               f"os_options_project_domain_name = {mail.domain}\n"
                               f"os_options_user_domain_name = {mail.domain}\n")
        credential_id, secret = self.keystone.application_credential("swiftdrop-faults")
        return settings + ("user = unused\nkey = unused\n"
                           "os_options_auth_type = v3applicationcredential\n"
                           f"os_options_application_credential_id = {credential_id}\n"
                           f"os_options_application_credential_secret = {secret}\n")

    def use_container(self, container):
        """Point the filter at a fresh, empty container: each run's ledger reads all of it."""
        self.swift.connection().put_container(container)
        self.ini.write_text(
            f"[DEFAULT]\nrecipient = DEFAULT\ncontainer = {container}\n{self.credentials}"
            f"timeout = {self.http_timeout}\nretries = {RETRIES}\n")
        self.ini.chmod(0o640)
        if self.filter is not None:
            self.filter.restart()

    def authentications(self):
        """How often the filter authenticated (or tried to) so far, from its log."""
        if self.keystone is None:
            return self.proxy.stats.auth_requests
        return len(AUTHENTICATIONS.findall(self.filter.log_path.read_text(errors="replace")))

    def send(self, ledger, message):
        """One SMTP transaction through Postfix; the reply goes into the ledger."""
        try:
            with DataReplySMTP("127.0.0.1", self.postfix.smtp_port, timeout=120) as client:
                client.sendmail(SENDER, [RECIPIENT], message.data)
                code, text = client.last_data_reply
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as error:
            code, text = error.smtp_code, error.smtp_error.decode(errors="replace")
        except smtplib.SMTPRecipientsRefused as error:
            code, text = next(iter(error.recipients.values()))
            text = text.decode(errors="replace")
        except (OSError, smtplib.SMTPException) as error:
            code, text = NO_REPLY, f"{type(error).__name__}: {error}"
        ledger.record(message, code, text, self.label)
        return code

    def restart_swift(self):
        """End a Swift outage (stopped, or killed by the proxy's trap)."""
        if self.swift.process is None:
            self.swift.start()


@contextlib.contextmanager
def small_tmpfs(path):
    """A tmpfs of SPOOL_SIZE for the filter's spool, or None where we may not mount."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SPOOL_SIZE},mode=1777",
                              "swiftdrop-faults", str(path)], capture_output=True, check=False)
    try:
        yield path if mounted.returncode == 0 else None
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", str(path)], check=False)


@dataclass(frozen=True)
class Fault:
    """``inject`` starts it; ``clear`` ends it.

    A lasting fault holds for a few answered messages and at least
    `min_seconds`: long enough for a message to use up its filter's retries
    inside it, so that the sender really meets it.
    """

    name: str
    inject: Callable[[Rig], None]
    clear: Callable[[Rig], None]
    lasting: bool
    min_seconds: float = 0
    auth: str = "any"  # "tempauth" or "keystone" where only that auth has it


def _nothing(rig):
    """The fault ended by itself (a restart, a reload)."""


def _proxy_mode(kind, arg=0):
    return lambda rig: rig.proxy.set_mode(kind, arg)


def _answer_late(rig):
    """Swift stores, and answers a second after the filter's timeout."""
    rig.proxy.set_mode("delay", rig.http_timeout + 1)


def _kill_during_upload(moment, victim):
    """Arm the proxy to kill the victim at `moment` of the next upload; wait for it."""
    def inject(rig):
        kill = rig.swift.kill if victim == "swift" else rig.filter.kill
        trap = rig.proxy.arm(moment, kill, min_size=4096)
        if not trap.fired.wait(30) and trap.disarm():
            raise TimeoutError(f"no upload to kill {victim} in")
        trap.fired.wait(30)
    return inject


def _fill_spool(rig):
    """Keep the spool at SPOOL_LEFT_WHEN_FULL bytes free until _empty_spool.

    Filling once is not enough: messages spooled on disk at that moment are
    deleted once stored, and the space they free would let the next big
    messages through. A thread tops the filler up until the fault clears.
    """
    stop = threading.Event()
    filler = open(rig.spool_dir / "filler", "wb")  # closed by _empty_spool

    def top_up():
        stat = os.statvfs(rig.spool_dir)
        left = stat.f_bavail * stat.f_frsize - SPOOL_LEFT_WHEN_FULL
        while left > 0:
            try:
                left -= filler.write(b"\0" * min(left, 1024 * 1024))
                filler.flush()
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                return  # full already: a message took the rest meanwhile

    def keep_full():
        while not stop.wait(0.02):
            top_up()

    top_up()
    thread = threading.Thread(target=keep_full, name="spool-filler", daemon=True)
    thread.start()
    rig.spool_filler = (stop, thread, filler)


def _empty_spool(rig):
    stop, thread, filler = rig.spool_filler
    stop.set()
    thread.join()
    filler.close()
    (rig.spool_dir / "filler").unlink()


def _token(change):
    def inject(rig):
        token = rig.proxy.stats.last_token
        if token is None or not change(rig.swift.memcache_port, token):
            raise RuntimeError("no token to take away")
    return inject


def _revoke_in_keystone(rig):
    """Revoke the filter's token in Keystone; wait until the filter had to authenticate again.

    Revoking takes Keystone a moment; a fast stream could end before the
    token is used again, and the fault would have hit nothing.
    """
    token = rig.proxy.stats.last_token
    if token is None:
        raise RuntimeError("no token to revoke")
    before = rig.authentications()
    rig.keystone.revoke(token)
    tokens.flush(rig.swift.memcache_port)  # Swift's authtoken cache of it
    deadline = time.monotonic() + 20
    while rig.authentications() == before:
        if time.monotonic() > deadline:
            raise TimeoutError("the revoked token was not used again")
        time.sleep(0.1)


def _keystone_outage(kind):
    """Keystone down in one way, and a filter that must authenticate during it.

    The filter holds a token for hours, so an outage alone would go unnoticed;
    a restart (a deployment, a crash) is when it needs Keystone.
    """
    def inject(rig):
        if kind == "refused":
            rig.keystone.stop()
        else:
            rig.keystone.set_fault(kind)
        rig.filter.restart()
    return inject


def _keystone_back(rig):
    if rig.keystone.process is None:
        rig.keystone.start()
    rig.keystone.set_fault("")


def _cut_after_headers(rig):
    """Cut the connection after the headers of the next PUT's answer; wait for it."""
    rig.proxy.set_mode("cut-after-headers", 1, methods=("PUT",))
    deadline = time.monotonic() + 30
    while rig.proxy.current_mode().kind != "pass":
        if time.monotonic() > deadline:
            raise TimeoutError("no upload to cut")
        time.sleep(0.05)


FAULTS = {fault.name: fault for fault in [
    Fault("swift-stopped", lambda rig: rig.swift.stop(), Rig.restart_swift, True, 3),
    Fault("swift-killed-mid-upload", _kill_during_upload("midway", "swift"),
          Rig.restart_swift, False),
    Fault("swift-503", _proxy_mode("status", 503), _proxy_mode("pass"), True, 3),
    Fault("swift-507", _proxy_mode("status", 507), _proxy_mode("pass"), True, 3),
    Fault("swift-slow", _answer_late, _proxy_mode("pass"), True, STORE_TIMEOUT + 1),
    # Every read and write of these succeeds: only the deadline over the whole request ends them.
    Fault("swift-drip", _proxy_mode("drip", 1), _proxy_mode("pass"), True, STORE_TIMEOUT + 1),
    Fault("swift-stall", _proxy_mode("stall", 2048), _proxy_mode("pass"), True,
          STORE_TIMEOUT + 1),
    Fault("connection-cut-mid-upload", _proxy_mode("drop"), _proxy_mode("pass"), True, 3),
    Fault("connection-cut-after-headers", _cut_after_headers, _proxy_mode("pass"), False),
    Fault("token-revoked", _token(tokens.revoke), _nothing, False, auth="tempauth"),
    Fault("token-expired", _token(tokens.expire), _nothing, False, auth="tempauth"),
    Fault("keystone-token-revoked", _revoke_in_keystone, _nothing, False, auth="keystone"),
    Fault("keystone-refused", _keystone_outage("refused"), _keystone_back, True, 3,
          auth="keystone"),
    Fault("keystone-silent", _keystone_outage("silent"), _keystone_back, True,
          STORE_TIMEOUT + 1, auth="keystone"),
    Fault("keystone-500", _keystone_outage("status 500"), _keystone_back, True, 3,
          auth="keystone"),
    Fault("keystone-503", _keystone_outage("status 503"), _keystone_back, True, 3,
          auth="keystone"),
    Fault("filter-killed-mid-upload", _kill_during_upload("midway", "filter"),
          lambda rig: rig.filter.wait_ready(), False),
    Fault("filter-killed-before-reply", _kill_during_upload("answered", "filter"),
          lambda rig: rig.filter.wait_ready(), False),
    Fault("spool-full", _fill_spool, _empty_spool, True, 1),
    Fault("postfix-reload", lambda rig: rig.postfix.reload(), _nothing, False),
]}


def faults_for(auth):
    """The faults that apply with this kind of auth (tempauth's tokens live in memcached)."""
    kind = "tempauth" if auth == "tempauth" else "keystone"
    return [name for name, fault in FAULTS.items() if fault.auth in ("any", kind)]


class Progress:
    """How many messages were sent and answered, and how many deferred; faults are paced by it."""

    def __init__(self):
        self.started = 0
        self.answered = 0
        self.deferred = 0  # 4xx or no reply: the sender met a fault
        self.done = False
        self.cond = threading.Condition()

    def start(self):
        with self.cond:
            self.started += 1

    def tick(self, code):
        with self.cond:
            self.answered += 1
            self.deferred += code == NO_REPLY or 400 <= code < 500
            self.cond.notify_all()

    def finish(self):
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def wait_for(self, count, timeout=60):
        """Wait until `count` messages are answered; False if the stream ended first."""
        return self.wait_until(lambda: self.answered >= count, timeout)

    def wait_until(self, condition, timeout=60):
        """Wait until `condition()` holds; False if the stream ended first."""
        with self.cond:
            self.cond.wait_for(lambda: condition() or self.done, timeout)
            return not self.done


def schedule(rig, faults, progress, *, total, rng, injected, hold, gap, until_felt=False):
    """Inject faults one after another while the stream runs, then leave all cleared.

    A lasting fault holds until `hold` messages sent after it began have
    their reply (answers beyond those in flight when it began), and at
    least its min_seconds. With `until_felt` it then holds on until a
    sender met it (a 4xx) or FELT_PATIENCE such messages were answered: a
    fault only some messages meet, such as a full spool that only messages
    too big for memory reach, is not over before one of them came by.
    """
    if not faults:
        return
    progress.wait_for(rng.randint(3, 6))
    deck = []  # a shuffled deck, not rng.choice: every fault comes before any repeats
    while progress.answered < total - 6:
        if not deck:
            deck = rng.sample(faults, len(faults))
        fault = deck.pop()
        rig.label = fault.name
        try:
            began = time.monotonic()
            fault.inject(rig)
            injected[fault.name] += 1
            if fault.lasting:
                in_flight, deferred = progress.started, progress.deferred
                progress.wait_for(in_flight + rng.randint(*hold), timeout=20)
                time.sleep(max(0, began + fault.min_seconds - time.monotonic()))
                if until_felt:
                    progress.wait_until(
                        lambda deferred=deferred, in_flight=in_flight:
                        progress.deferred > deferred
                        or progress.answered >= in_flight + FELT_PATIENCE, timeout=20)
            else:
                time.sleep(rng.uniform(0, 0.5))
        except TimeoutError:
            pass  # the stream ended before the moment came
        finally:
            fault.clear(rig)
        if not progress.wait_for(progress.answered + rng.randint(*gap)):
            break


def run_scenario(rig, name, fault_names, messages, *, seed=1, big_share=0.12,
                 hold=(3, 8), gap=(1, 6), retry_rounds=5, until_felt=False):
    """Send `messages` through the rig while injecting the named faults; return the Summary.

    A lasting fault holds for `hold` (a range) more answered messages, the
    next one comes `gap` messages after the last cleared; both drawn at random.
    """
    rng = random.Random(seed)
    run = f"{name}-{seed}-{int(time.time())}"
    container = f"faults-{run}"
    rig.use_container(container)
    rig.label = "none"
    ledger = Ledger(run, seed)
    stream = [ledger.new(rng.randint(*BIG) if rng.random() < big_share else rng.randint(*SMALL))
              for _ in range(messages)]
    auth_before, starts_before = rig.authentications(), rig.filter.starts
    log_before = len(rig.filter.log_path.read_text(errors="replace"))
    notices_before = len(rig.webhook.notices)
    injected = collections.Counter()
    progress = Progress()
    faults = [FAULTS[fault] for fault in fault_names]
    failures = []

    def run_schedule():
        try:
            schedule(rig, faults, progress, total=messages, rng=rng, injected=injected,
                     hold=hold, gap=gap, until_felt=until_felt)
        except Exception as error:  # re-raised below, once the stream is over
            failures.append(error)

    scheduler = threading.Thread(target=run_schedule)
    started = time.monotonic()
    scheduler.start()
    with concurrent.futures.ThreadPoolExecutor(rig.sessions) as pool:
        for future in [pool.submit(_send_and_tick, rig, ledger, m, progress) for m in stream]:
            future.result()
    progress.finish()
    scheduler.join()
    if failures:
        raise failures[0]
    rig.label = "retry after the faults"
    rig.filter.wait_ready()
    for _ in range(retry_rounds):
        pending = ledger.to_retry()
        if not pending:
            break
        time.sleep(0.5)
        with concurrent.futures.ThreadPoolExecutor(rig.sessions) as pool:
            list(pool.map(lambda m: rig.send(ledger, m), pending))
    summary = ledger.reconcile(rig.swift.connection(), container)
    summary.injected.update(injected)
    summary.auth_requests = rig.authentications() - auth_before
    # Failure notices only: a recovery notice follows each one the same process sent.
    summary.notices = sum(notice["event"] == "swiftdrop.store_failed" for notice in
                          rig.webhook.wait_for(notices_before + 1, timeout=1)[notices_before:])
    summary.filter_restarts = rig.filter.starts - starts_before
    summary.internal_errors = rig.filter.log_path.read_text(errors="replace")[
        log_before:].count("internal error")
    summary.seconds = round(time.monotonic() - started, 1)
    return summary


def _send_and_tick(rig, ledger, message, progress):
    progress.start()
    progress.tick(rig.send(ledger, message))
