"""The long-running filter process: sockets, threads, logging, systemd integration.

Under systemd the listening socket comes from a ``.socket`` unit
(``Accept=no``): systemd holds it open across restarts, so Postfix's
connections wait in the backlog while a new process starts instead of being
refused. One process serves all connections, a thread each at a time, so the
per-account Swift token and keep-alive connections are shared.
"""

import logging
import os
import queue
import selectors
import signal
import socket
import stat
import threading

from systemd.daemon import listen_fds, notify

from . import config as config_module
from . import metrics
from .admin_relay import AdminRelay
from .alerts import Alerter
from .certificates import CertificateCollector
from .delivery import Deliverer
from .health import Activity, Heartbeat
from .naming import MaildirNamer
from .process import EX_CONFIG, configure_logging
from .smtp import SmtpSession
from .storage import SwiftStore
from .stream_index import IN_FLIGHT, Announcer
from .verdicts import RspamdClient

log = logging.getLogger(__name__)

class UnsafeListenAddress(ValueError):
    """The filter must only be reachable by Postfix: loopback or a unix socket."""


def bind_listener(spec):
    """Bind ``unix:/path``, ``HOST:PORT`` or ``[V6]:PORT``; refuse non-loopback hosts."""
    if spec.startswith("unix:"):
        path = spec[len("unix:"):]
        if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
    else:
        host, _, port = spec.rpartition(":")
        host = host.strip("[]")
        if not config_module.is_loopback(host):
            raise UnsafeListenAddress(f"{spec}: the filter listens on loopback only")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, int(port)))
    listener.listen(128)
    return listener


def inherited_listeners():
    """Sockets passed by systemd socket activation, checked to be loopback or unix."""
    listeners = [socket.socket(fileno=fd) for fd in listen_fds()]
    for listener in listeners:
        if listener.family in (socket.AF_INET, socket.AF_INET6):
            host = listener.getsockname()[0]
            if not config_module.is_loopback(host):
                raise UnsafeListenAddress(f"systemd passed a socket on {host}: loopback only")
    return listeners


class Server:
    """Accepts on every listener; serves each connection in a worker thread of its own.

    A worker that finished a session waits for the next connection instead
    of ending: starting a thread costs about 0.3 ms of CPU here
    (bench.filter_floor), a fifth of what a small message costs the filter.
    One idle for IDLE_WORKER_SECONDS ends, so a burst's threads do not stay.
    """

    def __init__(self, listeners, make_session, max_connections=200, heartbeat=None):
        self.listeners = listeners
        self.make_session = make_session
        self.heartbeat = heartbeat  # beats on every turn of the accept loop
        self.slots = threading.BoundedSemaphore(max_connections)
        self.idle_workers = []
        self.lock = threading.Lock()
        self.sessions_done = threading.Condition(self.lock)
        self.active_sessions = 0
        self.stopping = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_writer.setblocking(False)  # as signal.set_wakeup_fd wants it

    def stop(self):
        """Stop accepting; safe to call from a signal handler."""
        self.stopping.set()
        self._wake_writer.send(b"x")

    def stop_on_signals(self, on_stop=lambda: None):
        """SIGTERM and SIGINT call `on_stop`, then stop(); only from the main thread.

        The kernel may hand the signal to a session thread, while Python runs
        the handler in the main thread once that one runs Python code again.
        The wakeup fd is the wake socket: the signal's byte on it stirs the
        accept loop's select, which then runs the handler at once.
        """
        def on_signal(signum, frame):
            on_stop()
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.set_wakeup_fd(self._wake_writer.fileno())

    def run(self, grace=90):
        """Serve until stop(); then let running sessions finish for up to `grace` seconds."""
        with selectors.DefaultSelector() as selector:
            for listener in self.listeners:
                selector.register(listener, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self.stopping.is_set():
                if self.heartbeat is not None:
                    self.heartbeat.beat()
                if not self.slots.acquire(timeout=1):
                    continue
                wait = self.heartbeat.wait if self.heartbeat is not None else None
                ready = [key.fileobj for key, _ in selector.select(wait)
                         if key.fileobj is not self._wake_reader]
                if not ready or self.stopping.is_set():
                    self.slots.release()
                    continue
                self.accept(ready[0])
        for listener in self.listeners:
            listener.close()
        self.wait_for_sessions(grace)

    def accept(self, listener):
        try:
            connection, _ = listener.accept()
        except OSError as error:
            self.slots.release()
            log.warning("accept failed: %s", error)
            return
        with self.lock:
            self.active_sessions += 1
            worker = self.idle_workers.pop() if self.idle_workers else None
        if worker is None:
            worker = _Worker(self)
            worker.thread.start()
        worker.connections.put(connection)

    def serve_connection(self, connection):
        try:
            with connection, metrics.SESSIONS_ACTIVE.track_inprogress():
                self.make_session(connection).serve()
        except Exception:
            log.exception("session failed")
        finally:
            with self.lock:
                self.active_sessions -= 1
                self.sessions_done.notify_all()
            self.slots.release()

    def wait_for_sessions(self, grace):
        with self.lock:
            if self.active_sessions:
                log.info("waiting for %d session(s) to finish", self.active_sessions)
            self.sessions_done.wait_for(lambda: not self.active_sessions, grace)


IDLE_WORKER_SECONDS = 60


class _Worker:
    """One thread serving the connections the accept loop hands it, one after another."""

    def __init__(self, server):
        self.server = server
        self.connections = queue.SimpleQueue()
        self.thread = threading.Thread(target=self.run, daemon=True, name="swiftdrop-session")

    def run(self):
        server = self.server
        while True:
            try:
                connection = self.connections.get(timeout=IDLE_WORKER_SECONDS)
            except queue.Empty:
                with server.lock:
                    if self in server.idle_workers:
                        server.idle_workers.remove(self)
                        return
                # The accept loop took this worker just as it gave up waiting.
                connection = self.connections.get()
            server.serve_connection(connection)
            with server.lock:
                server.idle_workers.append(self)


def in_flight_problem(config, store_timeout):
    """Why the reconciler could miss a copy stored this late (None: it cannot).

    The reconciler leaves names younger than IN_FLIGHT to the filter and
    moves past older ones: a copy must be stored within that of its name.
    """
    indexed = [d.section for d in config.destinations if d.queue.index == "redis-stream"]
    if indexed and store_timeout >= IN_FLIGHT:
        return (f"--store-timeout {store_timeout:g} must be below {IN_FLIGHT:g} s with a "
                f"stream index ([{indexed[0]}] queue_index = redis-stream): the reconciler "
                "takes a copy that much younger than its name to be settled")
    return None


def antivirus_problem(config, options):
    """Why the virus verdict would not be what the ini asks (None: it is).

    A destination that refuses viruses while nothing scans would refuse
    nothing, silently: the filter does not start instead.
    """
    if options.antivirus and not options.rspamd_url:
        return "--antivirus needs --rspamd-url: rspamd is what asks clamd"
    refusing = [d.section for d in config.destinations if "virus" in d.reject_verdicts]
    if refusing and not options.antivirus:
        return (f"[{refusing[0]}] reject_verdicts lists virus, but without --antivirus no "
                "message is scanned and none would be refused")
    return None


def serve(options):
    """Entry point of ``swiftdrop serve``; returns the process exit status."""
    configure_logging(options.log_target)
    try:
        config = config_module.load(options.config)
        # Before the SMTP socket: once that answers, so do the metrics.
        if options.metrics_listen:
            if options.tls_certificate:
                metrics.REGISTRY.register(CertificateCollector(options.tls_certificate))
            metrics.serve_metrics(options.metrics_listen)
        listeners = ([bind_listener(spec) for spec in options.listen] if options.listen
                     else inherited_listeners())
    except config_module.ConfigError as error:
        for problem in error.problems:  # one journal entry each, the file's every problem
            log.error("cannot start: %s", problem.line)
        return EX_CONFIG
    except (UnsafeListenAddress, OSError) as error:
        log.error("cannot start: %s", error)
        return EX_CONFIG
    if not listeners:
        log.error("cannot start: no socket from systemd and no --listen given")
        return EX_CONFIG
    for problem in (in_flight_problem(config, options.store_timeout),
                    antivirus_problem(config, options)):
        if problem is not None:
            log.error("cannot start: %s", problem)
            return EX_CONFIG
    namer = MaildirNamer(options.hostname)
    admin_relay = (AdminRelay(options.admin_relay, options.admin_local_parts, namer.hostname)
                   if options.admin_relay else None)
    alerter = None
    if options.alert_webhook or options.alert_mail:
        alerter = Alerter(options.alert_interval, webhook_url=options.alert_webhook,
                          mail_to=options.alert_mail, relay=admin_relay)
    metrics.known_destinations(config.destinations)
    activity = Activity()
    metrics.on_reply(activity.replied)
    verdicts = (RspamdClient(options.rspamd_url, options.rspamd_timeout,
                             mta_name=namer.hostname, alerter=alerter,
                             antivirus=options.antivirus)
                if options.rspamd_url else None)
    deliver = metrics.MeasuredDelivery(
        Deliverer(config, SwiftStore(), namer, options.store_timeout, alerter=alerter,
                  admin_relay=admin_relay, reply_detail=options.reply_detail,
                  verdicts=verdicts, announcer=Announcer(config.destinations)))

    def make_session(connection):
        return SmtpSession(connection, deliver, hostname=namer.hostname,
                           max_message_size=options.max_message_size,
                           spool_dir=options.spool_dir, idle_timeout=options.idle_timeout)

    server = Server(listeners, make_session, options.max_connections, Heartbeat(activity))

    # notify() does nothing unless systemd asked for it (Type=notify).
    server.stop_on_signals(lambda: notify("STOPPING=1"))
    where = ", ".join(str(listener.getsockname()) for listener in listeners)
    log.info("serving on %s with %d destination(s) from %s",
             where, len(config.destinations), config.path)
    notify("READY=1")
    server.run(grace=options.store_timeout + 10)
    log.info("stopped")
    return 0
