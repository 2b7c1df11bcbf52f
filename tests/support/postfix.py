"""A private, throw-away Postfix instance for tests, bound to loopback only.

`PostfixInstance` drives Debian's stock Postfix binaries (``/usr/sbin/postfix``,
``/usr/lib/postfix/sbin/*``) with its own ``config_directory``,
``queue_directory`` and ``data_directory`` under a work directory.  It is
started with ``postfix -c CONFIG start`` and never changes /etc/postfix or the
system instance's state (``/var/spool/postfix``); /etc/postfix is only read by
Postfix's own scripts (postfix-files, multi_instance_directories).

The generated main.cf turns Postfix into a pure *before-queue proxy* relay: the
public smtpd on ``127.0.0.1:PORT`` validates recipients itself and hands every
accepted message to ``smtpd_proxy_filter`` (the SwiftDrop filter, or a test
responder).  Nothing is ever delivered from the local queue.

Constraints found on Debian 12 / Postfix 3.7 (root, no systemd):

* ``alternate_config_directories`` is NOT needed.  ``postfix -c DIR
  check|start|stop|reload|status``, ``postconf -c DIR`` and the ``postsuper``
  that postfix-script runs work for root with any directory.  Only the set-gid ``postdrop``/
  ``postqueue`` refuse an unlisted directory, and only for non-root callers
  (``fatal: specify "alternate_config_directories = DIR" ... in
  /etc/postfix/main.cf``).  Tests run as root, so /etc/postfix stays untouched.
* The ``postfix`` command chdir()s to ``queue_directory`` before anything
  else, so that directory must exist (root-owned, 0755); ``postfix check`` and
  ``postfix start`` then run ``post-install create-missing`` which creates the
  queue sub-directories (owner postfix, ``maildrop``/``public`` group postdrop)
  and ``data_directory`` (owner postfix, 0700).  ``set-permissions`` is
  deliberately not used: it would also re-chown/chmod the *shared* files in
  ``meta_directory`` (= /etc/postfix) and ``command_directory``.
  ``meta_directory`` keeps its compiled-in default /etc/postfix and is only
  read (postfix-files, dynamicmaps.cf); main.cf contains no /etc/postfix path.
* Every ancestor of the work directory must be searchable (``x``) by the
  ``postfix`` user: daemons drop privileges and open absolute paths
  (``data_directory``, the maillog via postlogd, ``unix:/abs`` proxy sockets).
  pytest's ``/tmp/pytest-of-root`` is 0700 (master then dies with ``fatal:
  open lock file .../data/master.lock: ... Permission denied``), so use
  `make_workdir()` (``mkdtemp`` under /var/tmp, chmod 0755; what
  `postfix_instance()` does).  The constructor refuses an untraversable
  workdir unless ``fix_traversal=True``, which adds ``o+x`` to the blocking
  ancestors -- but every new pytest session chmods ``/tmp/pytest-of-root``
  back to 0700, which kills instances of a concurrently running session
  (observed), so that is only safe for a lone session.
* ``maillog_file`` must match ``maillog_file_prefixes`` (default ``/var,
  /dev/stdout``), so the prefix is set to the work directory; ``postfix
  check`` insists on the ``postlog unix-dgram`` service when maillog_file is
  set.
* ``mynetworks``: with ``compatibility_level >= 2`` the default is
  ``mynetworks_style = host``, which on a loopback-only instance evaluates to
  ``127.0.0.1/32`` -- exactly the address the test client connects from, so
  ``permit_mynetworks`` would turn the instance into an open relay for the
  tests.  main.cf therefore sets ``mynetworks =`` (explicitly empty; an
  explicit value overrides mynetworks_style).  Result: a foreign domain gets
  ``554 5.7.1 Relay access denied`` and an unlisted recipient of a relay
  domain ``550 5.1.1 ... User unknown in relay recipient table``.
* ``smtpd_proxy_filter = unix:PATH``: a relative PATH is resolved against the
  queue directory (the daemons' working directory; with chroot it would be the
  chroot), e.g. ``unix:private/filter`` -> ``QUEUE/private/filter``.  An
  absolute PATH is used as is (all services run with chroot ``n``).  The
  smtpd connecting to it runs as user ``postfix``: the socket must be writable
  for that user (chmod 0666 or chown postfix) and its directory searchable.
  See `PostfixInstance.proxy_socket_path`.  Without that: ``warning: connect
  to proxy filter unix:...: Permission denied`` and the client gets ``451
  4.3.0 Error: queue file write error``.
* ``local_header_rewrite_clients`` is emptied: its default
  ``permit_inet_interfaces`` makes the 127.0.0.1 test client "local", which
  shows up as ``XFORWARD ... SOURCE=LOCAL``; real MX clients are REMOTE.
* ``default_transport = error:...``: the queue only ever receives Postfix's
  own notices (``notify_classes = resource, software`` mails postmaster when
  the proxy filter fails); they bounce at once and the bounce of the notice is
  discarded, so no DNS or outbound SMTP is ever attempted.
* Speed: Postfix re-reads a freshly modified table file (main.cf too) every
  300 ms until its mtime is 2 s old, so the generated files are backdated;
  ``postfix start`` would repeat ``postfix check`` (~0.5 s) unless
  ``QUEUE/quick-start`` exists, so it is touched after the check passed.
  Start-up is then ~0.7-1.2 s (``postfix check`` dominates).
* With ``smtpd_proxy_options = speed_adjust`` smtpd receives the whole
  message before it connects to the filter, then sends ``EHLO
  $smtpd_proxy_ehlo``, ``XFORWARD ...`` (only if the filter advertises it),
  and replays the client's MAIL/RCPT/DATA command lines verbatim (including
  their case, e.g. smtplib's ``mail FROM:``), then QUIT.
* PID 1 here is not a real init: after ``postfix stop`` the dead daemons are
  orphans that stay ``<defunct>`` until PID 1 reaps them (~1-2 s).  `stop()`
  (~0.1 s) waits until no live process of the instance is left; an atexit
  hook stops forgotten instances and waits (`wait_reaped()`) for the reaping,
  so ``ps`` is clean once the test run is over.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator
import contextlib
import os
import pathlib
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import weakref

from tests.support.ports import reserve_port

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
POSTQUEUE = "/usr/sbin/postqueue"
MAIL_OWNER = "postfix"
HOST = "127.0.0.1"
MYHOSTNAME = "mx.swiftdrop.test"

# Stock services from Debian's master.cf (Postfix 3.7), all with chroot "n".
# local/virtual and the pipe(8) examples are left out: nothing is delivered
# locally (local_transport = error:...).
_STOCK_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
  -o syslog_name=postfix/$service_name
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixError(RuntimeError):
    """A postfix/postconf command failed or the instance did not come up."""


def make_workdir(prefix: str = "swiftdrop-postfix-", base: str = "/var/tmp") -> pathlib.Path:
    """Create a fresh work directory that the `postfix` user can traverse.

    /var/tmp is 1777, so a 0755 ``mkdtemp`` below it is reachable for
    unprivileged daemons, unlike pytest's 0700 ``/tmp/pytest-of-root``.
    """
    path = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    path.chmod(0o755)
    return path


def _postfix_ids() -> tuple[int, set[int]]:
    pw = pwd.getpwnam(MAIL_OWNER)
    return pw.pw_uid, set(os.getgrouplist(pw.pw_name, pw.pw_gid))


def untraversable_ancestors(path: pathlib.Path) -> list[pathlib.Path]:
    """Directories on the way to `path` (inclusive) the postfix user cannot search."""
    uid, gids = _postfix_ids()
    blocked = []
    for directory in [*reversed(path.resolve().parents), path.resolve()]:
        st = directory.stat()
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            blocked.append(directory)
    return blocked


def _pgrp_members(pgid: int, *, zombies: bool = False) -> list[int]:
    """Processes whose process group is `pgid` (live ones; zombies on request)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                data = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may contain spaces/parens.
        fields = data[data.rfind(")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and (zombies or fields[0] != "Z"):
            members.append(int(entry))
    return members



def _port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


_RUNNING: weakref.WeakSet[PostfixInstance] = weakref.WeakSet()
_UNREAPED: set[int] = set()  # process groups of stopped instances


def wait_reaped(timeout: float = 5) -> bool:
    """Wait until PID 1 has reaped the dead daemons of all stopped instances.

    After ``postfix stop`` the daemons are orphans that stay ``<defunct>``
    until PID 1 reaps them, which takes ~1-2 s here.  Called at exit, so
    ``ps`` is clean after the test run without paying that time per instance.
    """
    deadline = time.monotonic() + timeout
    while True:
        _UNREAPED.difference_update(
            [pgid for pgid in list(_UNREAPED) if not _pgrp_members(pgid, zombies=True)]
        )
        if not _UNREAPED:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@atexit.register
def _stop_leftovers() -> None:  # a crashed test run must not leave masters behind
    for instance in list(_RUNNING):
        with contextlib.suppress(Exception):
            instance.stop()
    wait_reaped()


class PostfixInstance:
    """A throw-away Postfix (Debian's binaries) with its own config_directory,
    queue_directory and data_directory under `workdir`, started with
    ``postfix -c CONFIG start``; never touches /etc/postfix's running state.

    Layout::

        WORKDIR/etc/main.cf, master.cf, relay_recipients   (config_directory)
        WORKDIR/spool/                                      (queue_directory)
        WORKDIR/data/                                       (data_directory)
        WORKDIR/maillog                                     (maillog_file)

    `proxy_filter` is the value of ``smtpd_proxy_filter``: ``inet:HOST:PORT``
    (or ``HOST:PORT``) or ``unix:PATH`` where a relative PATH is relative to the
    queue directory (see `proxy_socket_path`).  `recipients` become
    ``relay_recipient_maps = texthash:CONFIG/relay_recipients`` (entries like
    ``user@domain`` or ``@domain``).  `extra_main` is merged last into main.cf
    and may override any generated setting (e.g. ``smtpd_proxy_timeout``);
    `extra_services` are master.cf lines appended to the generated ones.
    `recipients`, `relay_domains`, `proxy_filter` and `extra_main` may be
    changed on a running instance followed by `reload()`.
    """

    def __init__(
        self,
        workdir: pathlib.Path,
        *,
        smtp_port: int | None = None,
        proxy_filter: str,
        relay_domains: list[str],
        recipients: list[str],
        extra_main: dict[str, str] | None = None,
        extra_services: list[str] | None = None,
        fix_traversal: bool = False,
    ) -> None:
        self.workdir = pathlib.Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.smtp_port: int = reserve_port() if smtp_port is None else smtp_port
        self.proxy_filter = proxy_filter
        self.relay_domains = list(relay_domains)
        self.recipients = list(recipients)
        self.extra_main = dict(extra_main or {})
        self.extra_services = list(extra_services or [])
        self.config_dir = self.workdir / "etc"
        self.queue_dir = self.workdir / "spool"
        self.data_dir = self.workdir / "data"
        self.maillog_path = self.workdir / "maillog"
        self.check_warnings: list[str] = []
        self.master_pid: int | None = None
        self.start_seconds: float | None = None
        self._lock = threading.Lock()
        blocked = untraversable_ancestors(self.workdir)
        if blocked and not fix_traversal:
            raise PermissionError(
                f"user {MAIL_OWNER!r} cannot traverse {', '.join(map(str, blocked))}; "
                "use make_workdir() (or fix_traversal=True to chmod o+x them)"
            )
        for directory in blocked:  # add search permission only, no read
            directory.chmod(stat.S_IMODE(directory.stat().st_mode) | stat.S_IXOTH)
        # check-warn complains about group/other writable root-owned dirs
        self.workdir.chmod(0o755)

    # ------------------------------------------------------------------ config
    @property
    def proxy_socket_path(self) -> pathlib.Path | None:
        """Filesystem path of a ``unix:`` proxy filter (relative -> queue dir)."""
        if not self.proxy_filter.startswith("unix:"):
            return None
        path = pathlib.Path(self.proxy_filter[len("unix:") :])
        return path if path.is_absolute() else self.queue_dir / path

    def main_cf(self) -> dict[str, str]:
        """The main.cf settings (generated defaults, then `extra_main`)."""
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": MAIL_OWNER,
            "setgid_group": "postdrop",
            "maillog_file": str(self.maillog_path),
            "maillog_file_prefixes": str(self.workdir),
            "syslog_name": "postfix",
            "import_environment": (
                "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME"
            ),
            "myhostname": MYHOSTNAME,
            "mydomain": "swiftdrop.test",
            "myorigin": "$myhostname",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mydestination": "",
            # explicitly empty: the default (mynetworks_style=host) would be
            # 127.0.0.1/32, i.e. the test client -> open relay for tests.
            "mynetworks": "",
            "relay_domains": ", ".join(self.relay_domains),
            "relay_recipient_maps": f"texthash:{self.config_dir}/relay_recipients",
            "local_recipient_maps": "",
            "local_transport": "error:local delivery disabled",
            # the queue only ever holds Postfix's own notices; never try DNS/SMTP
            "default_transport": "error:outbound delivery disabled in test instance",
            "alias_maps": "",
            "alias_database": "",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            # default permit_inet_interfaces makes 127.0.0.1 a "local" client
            # (XFORWARD SOURCE=LOCAL); production clients are remote.
            "local_header_rewrite_clients": "",
            "smtpd_proxy_filter": self.proxy_filter,
            "smtpd_proxy_timeout": "100s",
            "smtpd_proxy_options": "speed_adjust",
            "smtpd_proxy_ehlo": "$myhostname",
            "notify_classes": "resource, software",
            "message_size_limit": "52428800",
            "mailbox_size_limit": "0",
            "smtputf8_enable": "yes",
            "biff": "no",
            "soft_bounce": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
            "html_directory": "no",
            "smtpd_banner": "$myhostname ESMTP",
        }
        settings.update(self.extra_main)
        return settings

    def master_cf(self) -> str:
        return (
            "# generated by tests/support/postfix.py\n"
            f"{HOST}:{self.smtp_port} inet n - n - - smtpd\n" + _STOCK_SERVICES
            + "".join(line + "\n" for line in self.extra_services)
        )

    def write_config(self) -> None:
        self.config_dir.mkdir(mode=0o755, exist_ok=True)
        self.queue_dir.mkdir(mode=0o755, exist_ok=True)  # postfix(1) chdirs here first
        lines = ["# generated by tests/support/postfix.py"]
        for key, value in self.main_cf().items():
            if "\n" in value or "\n" in key:
                raise ValueError(f"newline in main.cf setting {key!r}")
            lines.append(f"{key} = {value}".rstrip())
        (self.config_dir / "main.cf").write_text("\n".join(lines) + "\n")
        (self.config_dir / "master.cf").write_text(self.master_cf())
        (self.config_dir / "relay_recipients").write_text(
            "".join(f"{rcpt.lower()} OK\n" for rcpt in self.recipients)
        )
        # Postfix re-reads a table file, sleeping 300 ms each time, until its
        # mtime is >= 2 s in the past (guard against half-written files); that
        # costs ~2 s on every freshly written main.cf.  These files are written
        # completely above, so backdate them.
        past = time.time() - 10
        for name in ("main.cf", "master.cf", "relay_recipients"):
            os.utime(self.config_dir / name, (past, past))

    # ------------------------------------------------------------- commands
    def _run(
        self, argv: list[str], *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise PostfixError(
                f"{' '.join(argv)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}\nmaillog tail:\n{self._log_tail()}"
            )
        return proc

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``postfix -c CONFIG ARGS``."""
        return self._run([POSTFIX, "-c", str(self.config_dir), *args], check=check)

    def postconf(self, *args: str) -> str:
        """Run ``postconf -c CONFIG ARGS`` and return its stdout."""
        return self._run([POSTCONF, "-c", str(self.config_dir), *args]).stdout

    def _validate(self) -> None:
        """postconf -n (catches typos in extra_main) and postfix check."""
        proc = self._run([POSTCONF, "-c", str(self.config_dir), "-n"])
        unused = [line for line in proc.stderr.splitlines() if "unused parameter" in line]
        if unused:
            raise PostfixError("main.cf has unknown parameters:\n" + "\n".join(unused))
        proc = self.postfix("check")
        self.check_warnings = [line for line in proc.stderr.splitlines() if line.strip()]

    # ------------------------------------------------------------ lifecycle
    def _read_master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _processes(self, pgid: int) -> list[int]:
        """Live members of process group `pgid` that work in our queue directory.

        Checking the cwd (master and all daemons chdir to queue_directory)
        guards against a recycled pid from a stale master.pid.
        """
        found = []
        for pid in _pgrp_members(pgid):
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if cwd == str(self.queue_dir):
                found.append(pid)
        return found

    def is_running(self) -> bool:
        pid = self.master_pid or self._read_master_pid()
        return pid is not None and pid in self._processes(pid)

    def start(self, timeout: float = 20) -> None:
        """Write main.cf/master.cf, ``postfix check``, ``postfix start``, wait for 220."""
        with self._lock:
            if self.is_running():
                raise PostfixError(f"{self!r} is already running")
            began = time.monotonic()
            deadline = began + timeout
            self.write_config()
            self._validate()
            # "postfix start" would repeat the integrity checks that
            # "postfix check" just passed (~0.5 s); postfix-script skips
            # them once if QUEUE/quick-start exists (as after quick-stop).
            (self.queue_dir / "quick-start").touch()
            proc = self.postfix("start", check=False)
            if proc.returncode != 0:
                with contextlib.suppress(FileNotFoundError):
                    (self.queue_dir / "quick-start").unlink()
                raise PostfixError(
                    f"postfix start failed ({proc.returncode}): {proc.stderr}\n{self._log_tail()}"
                )
            self.master_pid = self._read_master_pid()
            _RUNNING.add(self)
            try:
                self._wait_banner(deadline)
            except BaseException:
                self._stop_locked(timeout=10)
                raise
            self.start_seconds = time.monotonic() - began

    def _wait_banner(self, deadline: float) -> None:
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.smtp_port), timeout=2) as sock:
                    sock.settimeout(max(0.5, deadline - time.monotonic()))
                    banner = sock.makefile("rb").readline()
                    if banner.startswith(b"220 "):
                        sock.sendall(b"QUIT\r\n")
                        return
                    last_error = PostfixError(f"unexpected banner {banner!r}")
            except OSError as exc:
                last_error = exc
            time.sleep(0.05)
        raise PostfixError(
            f"no 220 banner on {HOST}:{self.smtp_port}: {last_error}\n{self._log_tail()}"
        )

    def reload(self, timeout: float = 10) -> None:
        """Re-write the config from the current attributes and ``postfix reload``.

        Waits until master logged the reload and the idle smtpd processes of
        the old generation are gone (~0.1 s; they would otherwise accept the
        next connection with the old settings), so a new SMTP connection after
        this returns sees the new configuration.  An smtpd still in a session
        finishes it with the old settings ("postfix reload" semantics).
        """
        with self._lock:
            before = self.maillog().count("reload -- version")
            master = self.master_pid or self._read_master_pid()
            old = self._daemons(master, "smtpd") if master else []
            self.write_config()
            self._validate()
            self.postfix("reload")
            self.wait_for_log(r"reload -- version", timeout=timeout, count=before + 1)
            deadline = time.monotonic() + min(timeout, 2)
            while master and time.monotonic() < deadline:
                if not set(old) & set(self._processes(master)):
                    break
                time.sleep(0.02)

    def _daemons(self, master: int, name: str) -> list[int]:
        found = []
        for pid in self._processes(master):
            with contextlib.suppress(OSError):
                if pathlib.Path(f"/proc/{pid}/comm").read_text().strip() == name:
                    found.append(pid)
        return found

    def stop(self, timeout: float = 20, *, reap_wait: float = 0) -> None:
        """``postfix -c CONFIG stop``; kill the process group if that fails.

        Returns when the SMTP port is closed and no live process of the
        instance is left; with `reap_wait` also (up to that many seconds)
        when PID 1 has reaped the zombies -- otherwise `wait_reaped()` does
        that once at exit.  Idempotent.
        """
        with self._lock:
            self._stop_locked(timeout, reap_wait)

    def _stop_locked(self, timeout: float, reap_wait: float = 0) -> None:
        pid = self.master_pid or self._read_master_pid()
        if pid is None or not self._processes(pid):
            self.master_pid = None
            _RUNNING.discard(self)
            return
        deadline = time.monotonic() + timeout
        if pid in self._processes(pid):
            # "postfix stop" sends SIGTERM, waits up to 5 s, then kill -9 -PGID
            proc = self.postfix("stop", check=False)
            if proc.returncode != 0 and pid in self._processes(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        while self._processes(pid) or _port_open(self.smtp_port):
            if time.monotonic() > deadline:
                for child in self._processes(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                time.sleep(0.2)
                if self._processes(pid):
                    raise PostfixError(f"postfix {pid} did not stop: {self._processes(pid)}")
                break
            time.sleep(0.05)
        # The dead daemons are orphans; PID 1 (not a real init here) reaps
        # them after ~1-2 s.  See wait_reaped().
        _UNREAPED.add(pid)
        if reap_wait:
            wait_reaped(reap_wait)
        self.master_pid = None
        _RUNNING.discard(self)

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ logs
    def maillog(self) -> str:
        """Content of the maillog_file (written by postlogd; may lag a little)."""
        try:
            return self.maillog_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.maillog().splitlines()[-lines:])

    def wait_until_queue_empty(self, timeout: float = 30) -> None:
        """Wait until no message waits in any queue (``postqueue -j`` prints nothing)."""
        deadline = time.monotonic() + timeout
        while self._run([POSTQUEUE, "-c", str(self.config_dir), "-j"]).stdout.strip():
            if time.monotonic() > deadline:
                raise PostfixError(f"queue not empty after {timeout} s:\n{self._log_tail()}")
            time.sleep(0.1)

    def wait_for_log(self, pattern: str, *, timeout: float = 10, count: int = 1) -> list[str]:
        """Wait until `pattern` (regex) matched `count` maillog lines; return them."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            hits = [line for line in self.maillog().splitlines() if regex.search(line)]
            if len(hits) >= count:
                return hits
            if time.monotonic() > deadline:
                raise PostfixError(f"{pattern!r} not in maillog:\n{self._log_tail()}")
            time.sleep(0.05)

    def __repr__(self) -> str:
        return f"<PostfixInstance {HOST}:{self.smtp_port} {self.workdir}>"


@contextlib.contextmanager
def postfix_instance(
    *, workdir: pathlib.Path | None = None, keep_workdir: bool = False, **kwargs: object
) -> Iterator[PostfixInstance]:
    """Start an instance (in a fresh `make_workdir()` unless given), stop it after.

    A work directory created here is removed afterwards unless `keep_workdir`
    or the environment variable ``SWIFTDROP_KEEP_POSTFIX=1`` is set.
    """
    created = workdir is None
    path = make_workdir() if workdir is None else workdir
    instance = PostfixInstance(path, **kwargs)  # type: ignore[arg-type]
    try:
        with instance:
            yield instance
    finally:
        if created and not keep_workdir and os.environ.get("SWIFTDROP_KEEP_POSTFIX") != "1":
            shutil.rmtree(path, ignore_errors=True)
