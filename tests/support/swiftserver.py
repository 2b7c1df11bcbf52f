"""A real OpenStack Swift on 127.0.0.1 for tests.

SwiftDrop relies on Swift's exact semantics (conditional PUT with
``If-None-Match: *``, ETag verification, server-side copy, tempauth token
expiry, container listings), so tests run against Swift's own server code
instead of a mock that could only imitate them.

Two halves live here:

* a launcher, ``python3 -m tests.support.swiftserver --workdir DIR --port
  PORT --memcache HOST:PORT``, that runs proxy, account, container and object
  servers in ONE eventlet process (one replica, one device, storage under
  DIR) and prints ``READY <port>`` once it accepts requests;
* :class:`SwiftServer`, which pytest uses to run that launcher plus the
  memcached that tempauth needs to store its tokens.

Auth is tempauth by default. With ``--keystone-url`` (``SwiftServer(...,
keystone=...)``, see :mod:`tests.support.keystone`) the proxy authenticates
against Keystone instead, with keystonemiddleware's ``authtoken`` and Swift's
``keystoneauth``, as production Swift clusters do.

The launcher needs Debian's ``python3-swift``; the pytest side needs only
``swiftclient``. Both halves import lazily: the launcher must monkey-patch
before swift is imported, and neither should pay for the other's imports.
"""
# ruff: noqa: PLC0415 (lazy imports on purpose, see above)

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import typing
import warnings

from tests.support.launched import HOST, LaunchedServer, signal_and_wait, wait_until
from tests.support.ports import reserve_port

if typing.TYPE_CHECKING:
    import swiftclient

    from tests.support.keystone import KeystoneServer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
ACCOUNTS = {
    "test": ("test:tester", "testing"),
    "test2": ("test2:tester2", "testing2"),
    "test3": ("test3:tester3", "testing3"),
}
# Users of account test without .admin: they own nothing there and reach a
# container only through its ACLs (X-Container-Read, X-Container-Write), as
# a user of a shared project does (tests/test_swift_rights.py).
MEMBERS = {
    "mx": ("test:mx", "mx-key"),
    "worker": ("test:worker", "worker-key"),
    "reader": ("test:reader", "reader-key"),
}
DEVICE = "sda1"
# 2**4 partitions are plenty for one device; the count only shapes the
# directory layout. It must stay fixed so that restarts find old data.
PART_POWER = 4
STORAGE_SERVERS = ("account", "container", "object")

# The hash suffix must never change: object paths on disk derive from it.
SWIFT_CONF = """\
[swift-hash]
swift_hash_path_suffix = swiftdrop-tests

[storage-policy:0]
name = Policy-0
default = yes
"""

COMMON_CONF = """\
[DEFAULT]
swift_dir = {workdir}
devices = {workdir}/devices
mount_check = false
log_udp_host = {host}
log_udp_port = {log_port}
"""

STORAGE_CONF = """\
[app:main]
use = egg:swift#{server}
"""

PROXY_CONF = """\
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache
    listing_formats bulk tempurl {auth} copy slo dlo versioned_writes
    proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
allow_account_management = true
account_autocreate = true
{proxy_options}
[filter:tempauth]
use = egg:swift#tempauth
token_life = {token_life}
storage_url_scheme = {storage_url_scheme}
{users}

[filter:cache]
use = egg:swift#memcache
memcache_servers = {memcache}

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:tempurl]
use = egg:swift#tempurl
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
"""

# Replaces tempauth in the pipeline with --keystone-url. authtoken validates
# tokens as the service user and caches them in our memcached; keystoneauth
# makes a project member the owner of account AUTH_<project id>.
KEYSTONE_FILTERS = """
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = {url}
auth_url = {url}
auth_type = password
username = {user}
password = {password}
project_name = {project}
user_domain_name = Default
project_domain_name = Default
memcached_servers = {memcache}
delay_auth_decision = true
include_service_catalog = false

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
"""


# --------------------------------------------------------------------------
# Launcher (runs in the child process)
# --------------------------------------------------------------------------


def tempauth_users() -> str:
    """tempauth's user lines: ACCOUNTS as their accounts' admins, MEMBERS not."""
    return "\n".join(
        [f"user_{user.replace(':', '_')} = {key} .admin" for user, key in ACCOUNTS.values()]
        + [f"user_{user.replace(':', '_')} = {key}" for user, key in MEMBERS.values()])


def write_configs(workdir: pathlib.Path, log_port: int, memcache: str,
                  token_life: int,
                  keystone: dict[str, str] | None = None, *,
                  storage_url_scheme: str = "default",
                  ) -> dict[str, pathlib.Path]:
    """Write swift.conf and one paste config per server; return the latter.

    Everything is rewritten from the command line on each start, so a
    workdir never carries stale settings into the next run. ``keystone``
    (url, user, password, project) switches the proxy from tempauth to it.
    ``storage_url_scheme`` is tempauth's: ``https`` behind a TLS terminator,
    whose clients must get https storage URLs although the proxy speaks http.
    """
    (workdir / "devices" / DEVICE).mkdir(parents=True, exist_ok=True)
    (workdir / "swift.conf").write_text(SWIFT_CONF)
    common = COMMON_CONF.format(workdir=workdir, host=HOST, log_port=log_port)
    paths = {}
    for server in STORAGE_SERVERS:
        paths[server] = workdir / f"{server}-server.conf"
        paths[server].write_text(common + STORAGE_CONF.format(server=server))
    paths["proxy"] = workdir / "proxy-server.conf"
    proxy = PROXY_CONF.format(
        auth="authtoken keystoneauth" if keystone else "tempauth",
        token_life=token_life, users=tempauth_users(), memcache=memcache,
        storage_url_scheme=storage_url_scheme, proxy_options="")
    if keystone:
        proxy += KEYSTONE_FILTERS.format(memcache=memcache, **keystone)
    paths["proxy"].write_text(common + proxy)
    return paths


def write_ring(workdir: pathlib.Path, server: str, port: int) -> None:
    """Write ``<server>.ring.gz`` mapping every partition to our one device.

    Storage servers listen on ephemeral ports, so the rings are rebuilt on
    every start; with a single device, partition placement never changes.
    """
    from array import array

    from swift.common.ring import RingData

    device = {"id": 0, "region": 1, "zone": 1, "ip": HOST, "port": port,
              "replication_ip": HOST, "replication_port": port,
              "device": DEVICE, "weight": 1.0, "meta": ""}
    ring = RingData([array("H", [0] * 2 ** PART_POWER)], [device],
                    32 - PART_POWER)
    ring.save(str(workdir / f"{server}.ring.gz"))


def serve(app, sock) -> None:
    """Serve one WSGI app the way swift's run_server does, minus forking."""
    import eventlet.wsgi
    from swift.common.http_protocol import SwiftHttpProtocol

    eventlet.wsgi.server(sock, app, log_output=False,
                         protocol=SwiftHttpProtocol,
                         capitalize_response_headers=False)


def echo_logs(sock: socket.socket) -> None:
    """Copy swift's syslog datagrams to stderr (only with --verbose)."""
    while True:
        sys.stderr.write(sock.recv(65536).decode(errors="replace") + "\n")


def run(args: argparse.Namespace) -> None:
    """Load the four Swift apps, start their listeners, print READY."""
    import eventlet
    from swift.common import storage_policy, utils
    from swift.common.wsgi import loadapp

    utils.eventlet_monkey_patch()  # already patched; adds swift's tweaks
    # Swift keeps header case as set; eventlet deprecates that, noisily.
    warnings.filterwarnings("ignore", "capitalize_response_headers")

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # Swift logs to syslog and there is no /dev/log. Give it a UDP socket we
    # own: nobody else can be listening there, and unread datagrams are
    # simply dropped by the kernel once its buffer is full.
    log_sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # green now
    log_sink.bind((HOST, 0))
    keystone = None
    if args.keystone_url:
        # authtoken warns about every option it leaves to keystoneauth's
        # password plugin (auth_url, username...) and all of [DEFAULT].
        logging.getLogger("keystonemiddleware._common.config").setLevel(
            logging.ERROR)
        keystone = {"url": args.keystone_url,
                    "user": args.keystone_service_user,
                    "password": args.keystone_service_password,
                    "project": args.keystone_service_project}
    confs = write_configs(workdir, log_sink.getsockname()[1], args.memcache,
                          args.token_life, keystone,
                          storage_url_scheme=args.storage_url_scheme)
    # Without this, swift reads /etc/swift/swift.conf.
    utils.set_swift_dir(str(workdir))
    storage_policy.reload_storage_policies()
    # Preallocation buys nothing here and can fail on small or odd disks.
    utils.disable_fallocate()

    listeners = {}
    for server in STORAGE_SERVERS:
        listeners[server] = eventlet.listen((HOST, 0))
        write_ring(workdir, server, listeners[server].getsockname()[1])
    listeners["proxy"] = eventlet.listen((HOST, args.port))

    servers = []
    for name, sock in listeners.items():
        app = loadapp(str(confs[name]),
                      global_conf={"log_name": f"{name}-server"})
        servers.append(eventlet.spawn(serve, app, sock))
    if args.verbose:
        eventlet.spawn(echo_logs, log_sink)
    print(f"READY {listeners['proxy'].getsockname()[1]}", flush=True)
    # Nobody reads our stdout after READY; a full pipe must never block us.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for server in servers:
        server.wait()


def exit_now(signum, frame) -> None:
    """Exit at once on SIGTERM, like swift's own worker processes do.

    Raising SystemExit instead could surface inside any greenthread, in the
    middle of handling a request. Whatever Swift acknowledged is on disk.
    """
    os._exit(0)


def patch_eventlet() -> None:
    """Monkey-patch like swift's servers do, but early, to start in ~1 s.

    Patching threads makes eventlet re-point every existing RLock, with a
    gc.collect() each, so it costs ~1 s once swift has filled the heap;
    done before swift is imported, it takes a few ms. Green DNS is off
    because it imports dnspython and httpx (~0.5 s) and we only use IPs.
    """
    os.environ.setdefault("EVENTLET_NO_GREENDNS", "yes")
    import eventlet

    eventlet.patcher.monkey_patch(all=False, socket=True, select=True,
                                  thread=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=pathlib.Path, required=True)
    parser.add_argument("--port", type=int, required=True,
                        help="proxy port (0 picks a free one)")
    parser.add_argument("--memcache", default=f"{HOST}:11211",
                        help="host:port of a running memcached")
    parser.add_argument("--token-life", type=int, default=86400,
                        help="tempauth token lifetime in seconds")
    parser.add_argument("--storage-url-scheme", default="default",
                        choices=("default", "http", "https"),
                        help="scheme of the storage URLs tempauth hands out; "
                        "https behind a TLS terminator")
    parser.add_argument("--verbose", action="store_true",
                        help="copy swift's logs to stderr")
    parser.add_argument("--keystone-url",
                        help="authenticate with this Keystone (v3) instead "
                        "of tempauth")
    parser.add_argument("--keystone-service-user", default="swift")
    parser.add_argument("--keystone-service-password")
    parser.add_argument("--keystone-service-project", default="service")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_now)
    patch_eventlet()
    run(args)


# --------------------------------------------------------------------------
# Pytest side
# --------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """Environment for the launcher: ours, made to start faster.

    setuptools' distutils shim (a .pth file, so it must be decided before
    the interpreter starts) makes eventlet's ``import distutils`` load all of
    setuptools, ~0.7 s; Python < 3.12 still has the stdlib distutils.
    """
    env = dict(os.environ)
    if sys.version_info < (3, 12):
        env.setdefault("SETUPTOOLS_USE_DISTUTILS", "stdlib")
    return env


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


def start_memcached(timeout: float) -> tuple[subprocess.Popen, int]:
    """A memcached on a reserved loopback port, once it accepts connections."""
    binary = shutil.which("memcached") or "/usr/bin/memcached"
    port = reserve_port()
    command = [binary, "-l", HOST, "-p", str(port), "-U", "0"]
    if os.geteuid() == 0:  # memcached refuses to run as root without -u
        command += ["-u", "root"]
    process = subprocess.Popen(command)
    wait_until(lambda: alive(process, "memcached") and accepts_connections(port),
               timeout, "memcached")
    return process, port


def alive(process: subprocess.Popen, name: str) -> bool:
    """Return True, or raise if the process has already exited."""
    if process.poll() is not None:
        raise RuntimeError(f"{name} exited with {process.returncode}")
    return True


class SwiftServer(LaunchedServer):
    """Runs the launcher above (plus memcached) as child processes.

    memcached is started once and survives stop()/start() of swift, so
    tokens stay valid across a swift restart, as they would in production.
    The proxy port is fixed at construction so that restarts keep URLs valid.

    ``keystone``, a running :class:`tests.support.keystone.KeystoneServer`,
    replaces tempauth with it: the first start() registers this Swift in
    its catalog, auth_url is Keystone's, and there are no tempauth accounts.

    ``storage_url_scheme="https"`` is for running behind a TLS terminator
    (:mod:`tests.support.tlsfront`): tempauth then hands out https storage
    URLs on the host and port the client used, i.e. the terminator's.
    """

    name = "swift"
    health_path = "/healthcheck"

    def __init__(self, workdir: pathlib.Path, port: int | None = None,
                 token_life: int = 86400, verbose: bool = False,
                 keystone: KeystoneServer | None = None, *,
                 storage_url_scheme: str = "default"):
        self.workdir = pathlib.Path(workdir).resolve()  # child runs elsewhere
        self.port = port or reserve_port()
        self.token_life = token_life
        self.verbose = verbose
        self.keystone = keystone
        self.storage_url_scheme = storage_url_scheme
        if keystone is None:
            self.auth_url = f"http://{HOST}:{self.port}/auth/v1.0"
            self.accounts = {**ACCOUNTS, **MEMBERS}
        else:
            self.auth_url = keystone.auth_url
            self.accounts = {}
        self.memcached: subprocess.Popen | None = None
        self.memcache_port: int | None = None

    def start(self, timeout: float = 30) -> None:
        """Start memcached (first time only) and swift; wait until usable."""
        if self.process is not None:
            raise RuntimeError("swift is already running")
        if self.memcached is None:
            self.memcached, self.memcache_port = start_memcached(timeout)
            if self.keystone is not None:
                self.keystone.register_swift(self.port)
        command = [
            sys.executable, "-m", "tests.support.swiftserver",
            "--workdir", str(self.workdir), "--port", str(self.port),
            "--memcache", f"{HOST}:{self.memcache_port}",
            "--token-life", str(self.token_life),
            "--storage-url-scheme", self.storage_url_scheme,
        ] + (["--verbose"] if self.verbose else [])
        if self.keystone is not None:
            service = self.keystone.service
            command += ["--keystone-url", self.keystone.auth_url,
                        "--keystone-service-user", service.user,
                        "--keystone-service-password", service.password,
                        "--keystone-service-project", service.project]
        self.launch(command, cwd=REPO_ROOT, env=child_env(), timeout=timeout)

    def release(self) -> None:
        """memcached survives stop()/start() of swift; close() ends it too."""
        signal_and_wait(self.memcached, signal.SIGTERM)
        self.memcached = None

    def connection(self, account: str = "test",
                   **kwargs) -> swiftclient.Connection:
        """A fresh auth-v1 swiftclient Connection; kwargs are passed on.

        In keystone mode: an auth-v3 one as Keystone's mail user instead.
        """
        import swiftclient

        if self.keystone is not None:
            return self.keystone.connection(**kwargs)
        user, key = self.accounts[account]
        return swiftclient.Connection(authurl=self.auth_url, user=user,
                                      key=key, auth_version="1", **kwargs)


if __name__ == "__main__":
    main()
