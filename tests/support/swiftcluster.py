"""A replicated OpenStack Swift on 127.0.0.1 for tests: three storage nodes.

:class:`tests.support.swiftserver.SwiftServer` keeps one copy of everything,
so it cannot show what a production cluster does when a node is away: a
PUT that reaches only a quorum of object servers, a listing that misses an
object until the object-updater catches up, a conditional PUT that two
replicas each accept. Here every part of Swift is its own process, as on a
real cluster:

* three nodes, each with an object, a container and an account server (own
  port, own devices directory, its one device in a zone of its own) and the
  object-updater plus the object, container and account replicators,
  sweeping every second so that catching up takes seconds, not minutes;
* rings of three replicas over those three devices (every partition on every
  node), built with Swift's ring builder;
* one proxy with tempauth and the same accounts, ``auth_url`` and
  ``connection()`` as SwiftServer, so tests/conftest.py's ``write_ini``
  points a filter at it unchanged;
* one memcached for tempauth's tokens and the proxy's container info.

Tests stop, kill (SIGKILL: a crash) and restart single servers or whole
nodes. The proxy forgets a node's errors after a second, so a node that is
back takes writes again at once.

The launcher half, ``python3 -m tests.support.swiftcluster serve|daemon|
rings``, runs one server (printing ``READY <port>``), one daemon, or builds
the rings; like SwiftServer's it needs Debian's ``python3-swift`` and
imports it lazily. ``setup`` is for a cluster that another supervisor runs
(systemd, in molecule/fleet's Swift guest): it writes the configs and rings
with fixed ports and a proxy on any address, and prints every process's
command as JSON. The object replicator uses ssync (Swift's own HTTP
protocol) because there is no rsync daemon; the database replicators only
need rsync to copy a whole database to a node that has none of it, which
these tests never need: their containers exist on every node before a node
is stopped.

Swift's logs (all processes, as syslog datagrams) go to ``swift.log`` in the
cluster's workdir: the first place to look when a test fails.
"""
# ruff: noqa: PLC0415 (lazy imports on purpose, see above)

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import json
import os
import pathlib
import pwd
import signal
import socket
import subprocess
import sys
import threading
import typing

from tests.support.launched import HOST, LaunchedServer
from tests.support.ports import reserve_port
from tests.support.swiftserver import (
    ACCOUNTS,
    MEMBERS,
    PROXY_CONF,
    REPO_ROOT,
    STORAGE_SERVERS,
    SWIFT_CONF,
    alive,
    child_env,
    exit_now,
    patch_eventlet,
    serve,
    start_memcached,
    tempauth_users,
)

if typing.TYPE_CHECKING:
    import swiftclient

NODES = 3
REPLICAS = 3
# 2**6 partitions: enough that objects spread, few enough that a
# replicator's sweep over all of them takes well under a second.
PART_POWER = 6
# Seconds between two sweeps of each replicator and of the object-updater.
SWEEP_INTERVAL = 1
# The daemons each node runs, by the module and class swift's own
# swift-object-updater etc. scripts hand to run_daemon.
DAEMONS = {
    "object-updater": ("object", "swift.obj.updater", "ObjectUpdater"),
    "object-replicator": ("object", "swift.obj.replicator", "ObjectReplicator"),
    "container-replicator": ("container", "swift.container.replicator",
                             "ContainerReplicator"),
    "account-replicator": ("account", "swift.account.replicator", "AccountReplicator"),
}

NODE_CONF = """\
[DEFAULT]
swift_dir = {workdir}
devices = {devices}
mount_check = false
bind_ip = {host}
bind_port = {port}
user = {user}
{log}log_name = node{node}-{server}
recon_cache_path = {recon}

[pipeline:main]
pipeline = healthcheck {server}-server

[app:{server}-server]
use = egg:swift#{server}

[filter:healthcheck]
use = egg:swift#healthcheck

[{server}-replicator]
interval = {interval}
sync_method = ssync

[object-updater]
interval = {interval}
"""

# Where every process sends its syslog datagrams: the cluster's LogSink.
# Without it (a cluster run by systemd in a guest), Swift logs to /dev/log.
LOG_CONF = """\
log_udp_host = {host}
log_udp_port = {log_port}
"""

PROXY_DEFAULTS = """\
[DEFAULT]
swift_dir = {workdir}
{log}log_name = proxy
"""

# A stopped node refuses connections at once, so short timeouts only cut
# the wait for a killed node's half-open ones. Error limiting would keep a
# restarted node out of writes for a minute; a second is enough here.
PROXY_OPTIONS = """\
conn_timeout = 0.5
node_timeout = 5
error_suppression_interval = 1
"""


# --------------------------------------------------------------------------
# Launcher (runs in the child processes)
# --------------------------------------------------------------------------


def build_rings(workdir: pathlib.Path, ports: dict[str, list[int]]) -> None:
    """Write ``<server>.builder`` and ``<server>.ring.gz`` for each server kind.

    One device per node, each node its own zone, three replicas: every
    partition has a copy on every node, and a quorum is two of them.
    """
    from swift.common.ring import RingBuilder

    for server, node_ports in ports.items():
        builder = RingBuilder(PART_POWER, REPLICAS, 0)
        for node, port in enumerate(node_ports):
            builder.add_dev({"id": node, "region": 1, "zone": node + 1, "ip": HOST,
                             "port": port, "replication_ip": HOST,
                             "replication_port": port, "device": device_name(node),
                             "weight": 100.0, "meta": ""})
        builder.rebalance()
        builder.save(str(workdir / f"{server}.builder"))
        builder.get_ring().save(str(workdir / f"{server}.ring.gz"))


def run_server(conf: pathlib.Path, port: int, host: str) -> None:
    """Serve the one WSGI app of ``conf`` on ``port``; print READY once listening."""
    import eventlet
    from swift.common.wsgi import loadapp

    prepare_swift(conf)
    listener = eventlet.listen((host, port))
    app = loadapp(str(conf))
    server = eventlet.spawn(serve, app, listener)
    print(f"READY {port}", flush=True)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nobody reads stdout now
    server.wait()


def run_daemon(conf: pathlib.Path, name: str) -> None:
    """Run one of DAEMONS as swift's own script for it would, until SIGTERM."""
    from swift.common.daemon import run_daemon as swift_run_daemon

    _, module, cls = DAEMONS[name]
    prepare_swift(conf)
    swift_run_daemon(getattr(importlib.import_module(module), cls), str(conf))


def prepare_swift(conf: pathlib.Path) -> None:
    """Point swift at the cluster's swift.conf and rings, not /etc/swift."""
    from swift.common import storage_policy, utils

    utils.set_swift_dir(str(conf.parent))
    storage_policy.reload_storage_policies()
    utils.disable_fallocate()  # buys nothing here, fails on odd disks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rings = commands.add_parser("rings", help="build the rings")
    rings.add_argument("--workdir", type=pathlib.Path, required=True)
    rings.add_argument("--ports", type=json.loads, required=True,
                       help='JSON: {"object": [port of node 0, ...], ...}')
    server = commands.add_parser("serve", help="run one server")
    server.add_argument("--conf", type=pathlib.Path, required=True)
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--host", default=HOST, help="address to listen on")
    daemon = commands.add_parser("daemon", help="run one daemon")
    daemon.add_argument("--conf", type=pathlib.Path, required=True)
    daemon.add_argument("name", choices=sorted(DAEMONS))
    setup = commands.add_parser(
        "setup", help="write a cluster's configs and rings for another supervisor "
        "(systemd in a guest); print its processes as JSON")
    setup.add_argument("--workdir", type=pathlib.Path, required=True)
    setup.add_argument("--proxy-host", required=True, help="address the proxy listens on")
    setup.add_argument("--proxy-port", type=int, required=True)
    setup.add_argument("--first-node-port", type=int, required=True,
                       help="node N's servers listen on this + 10 N, + 1, + 2")
    setup.add_argument("--memcache", required=True, help="host:port of a running memcached")
    args = parser.parse_args(argv)
    if args.command == "rings":
        build_rings(args.workdir, args.ports)
        return
    if args.command == "setup":
        cluster = SwiftCluster(args.workdir, args.proxy_port, proxy_host=args.proxy_host,
                               first_node_port=args.first_node_port)
        cluster.write_configs(args.memcache)
        build_rings(cluster.workdir, cluster.ring_ports())
        json.dump(cluster.processes(), sys.stdout, indent=1)
        return
    signal.signal(signal.SIGTERM, exit_now)
    patch_eventlet()
    if args.command == "serve":
        run_server(args.conf, args.port, args.host)
    else:
        run_daemon(args.conf, args.name)


# --------------------------------------------------------------------------
# Pytest side
# --------------------------------------------------------------------------


def device_name(node: int) -> str:
    return f"d{node}"


def launcher(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.support.swiftcluster", *args]


class ClusterServer(LaunchedServer):
    """One server process of the cluster (a storage server or the proxy)."""

    health_path = "/healthcheck"

    def __init__(self, name: str, conf: pathlib.Path, port: int, host: str = HOST):
        self.name = name
        self.conf = conf
        self.port = port
        self.host = host

    def command(self) -> list[str]:
        return launcher("serve", "--conf", str(self.conf), "--port", str(self.port),
                        "--host", self.host)

    def start(self, timeout: float = 30) -> None:
        if self.process is not None:
            raise RuntimeError(f"{self.name} is already running")
        self.launch(self.command(), cwd=REPO_ROOT, env=child_env(), timeout=timeout)

    @property
    def running(self) -> bool:
        return self.process is not None

    def where_to_look(self) -> str:
        return f"its stderr and {self.conf.parent / 'swift.log'} tell why"


class ClusterDaemon:
    """One replicator or updater: a process group, since some of them fork.

    Swift's daemons answer SIGTERM by signalling their whole process group,
    so each gets a session of its own (and never signals pytest's group).
    """

    def __init__(self, node: int, kind: str, conf: pathlib.Path):
        self.kind = kind
        self.name = f"node{node} {kind}"
        self.conf = conf
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return launcher("daemon", "--conf", str(self.conf), self.kind)

    def start(self) -> None:
        if self.process is None:
            self.process = subprocess.Popen(
                self.command(), cwd=REPO_ROOT, env=child_env(), start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Signal the daemon's group (its sweeps' children too) and reap it."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signum)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def check(self) -> None:
        """Raise if the daemon died on its own (a broken config, say)."""
        if self.process is not None:
            alive(self.process, self.name)


class Node:
    """One storage node: its servers (account, container, object) and daemons."""

    def __init__(self, number: int, workdir: pathlib.Path, first_port: int | None = None):
        """Servers on reserved ports, or on first_port, + 1, + 2 if given."""
        self.number = number
        self.devices = workdir / f"node{number}"
        self.device = self.devices / device_name(number)
        self.recon = workdir / f"node{number}-recon"  # not in devices: no device
        self.servers: dict[str, ClusterServer] = {}
        for offset, server in enumerate(STORAGE_SERVERS):
            conf = workdir / f"node{number}-{server}-server.conf"
            port = reserve_port() if first_port is None else first_port + offset
            self.servers[server] = ClusterServer(f"node{number} {server}-server", conf, port)
        self.daemons = [ClusterDaemon(number, kind, self.servers[server].conf)
                        for kind, (server, _, _) in DAEMONS.items()]

    def write_configs(self, workdir: pathlib.Path, log: str) -> None:
        self.device.mkdir(parents=True, exist_ok=True)
        self.recon.mkdir(exist_ok=True)
        user = pwd.getpwuid(os.getuid()).pw_name  # swift's daemons switch to it
        for server, process in self.servers.items():
            process.conf.write_text(NODE_CONF.format(
                workdir=workdir, devices=self.devices, host=HOST, port=process.port,
                user=user, log=log, node=self.number, server=server,
                recon=self.recon,
                interval=SWEEP_INTERVAL))

    def daemons_of_kind(self, kind: str) -> list[ClusterDaemon]:
        return [daemon for daemon in self.daemons if daemon.kind == kind]


class LogSink:
    """Swift's syslog datagrams, appended to one file by a thread of ours."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind((HOST, 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._copy, name="swift-log", daemon=True)
        self.thread.start()

    def _copy(self) -> None:
        with open(self.path, "ab") as log:
            while not self.closing.is_set():
                try:
                    log.write(self.socket.recv(65536) + b"\n")
                except TimeoutError:
                    log.flush()

    def close(self) -> None:
        self.closing.set()
        self.thread.join()
        self.socket.close()


class SwiftCluster:
    """Three storage nodes, a proxy and memcached, as child processes.

    Ports are fixed at construction, so the rings (built once, in start())
    and the storage URLs stay valid across restarts of any part. Reserved
    ones by default; the ``setup`` launcher command gives fixed ones (and a
    proxy on another address than loopback) for a cluster that systemd runs.
    """

    def __init__(self, workdir: pathlib.Path, port: int | None = None, *,
                 proxy_host: str = HOST, first_node_port: int | None = None):
        self.workdir = pathlib.Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log: LogSink | None = None
        self.port = port or reserve_port()
        self.auth_url = f"http://{HOST}:{self.port}/auth/v1.0"
        self.accounts = {**ACCOUNTS, **MEMBERS}
        self.proxy = ClusterServer("proxy", self.workdir / "proxy-server.conf", self.port,
                                   proxy_host)
        self.nodes = [Node(number, self.workdir,
                           None if first_node_port is None else first_node_port + 10 * number)
                      for number in range(NODES)]
        self.memcached: subprocess.Popen | None = None

    # -- whole cluster -----------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Write configs and rings, start every process, wait until all serve."""
        self.log = LogSink(self.workdir / "swift.log")
        self.memcached, memcache_port = start_memcached(timeout)
        self.write_configs(f"{HOST}:{memcache_port}", self.log.port)
        subprocess.run(launcher("rings", "--workdir", str(self.workdir),
                                "--ports", json.dumps(self.ring_ports())),
                       cwd=REPO_ROOT, env=child_env(), check=True)
        self._start_servers([*self._storage_servers(), self.proxy], timeout)
        for node in self.nodes:
            for daemon in node.daemons:
                daemon.start()

    def close(self) -> None:
        """Stop every process of the cluster."""
        for node in self.nodes:
            for daemon in node.daemons:
                daemon.stop()
        for server in [self.proxy, *self._storage_servers()]:
            server.stop()
        if self.memcached is not None:
            self.memcached.terminate()
            self.memcached.wait()
            self.memcached = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def restore(self, timeout: float = 30) -> None:
        """Start whatever a test stopped or killed: all nodes whole again."""
        self._start_servers([server for server in self._storage_servers()
                             if not server.running], timeout)
        for node in self.nodes:
            for daemon in node.daemons:
                daemon.check()
                daemon.start()

    def __enter__(self) -> typing.Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- parts of it ---------------------------------------------------------

    def stop_node(self, number: int) -> None:
        """Stop a node's daemons and servers (SIGTERM), as for maintenance."""
        node = self.nodes[number]
        for daemon in node.daemons:
            daemon.stop()
        for server in node.servers.values():
            server.stop()

    def kill_node(self, number: int) -> None:
        """SIGKILL every process of a node, servers first: a node that crashes."""
        node = self.nodes[number]
        for server in node.servers.values():
            server.kill()
        for daemon in node.daemons:
            daemon.stop(signal.SIGKILL)

    def start_node(self, number: int, timeout: float = 30) -> None:
        node = self.nodes[number]
        self._start_servers([server for server in node.servers.values()
                             if not server.running], timeout)
        for daemon in node.daemons:
            daemon.start()

    def stop_server(self, number: int, server: str) -> None:
        """Stop one server ("object", "container", "account") of a node."""
        self.nodes[number].servers[server].stop()

    def start_server(self, number: int, server: str, timeout: float = 30) -> None:
        self.nodes[number].servers[server].start(timeout)

    def stop_object_server(self, number: int) -> None:
        self.stop_server(number, "object")

    def stop_daemons(self, kind: str) -> None:
        """Stop one kind of daemon (e.g. "object-updater") on every node."""
        for node in self.nodes:
            for daemon in node.daemons_of_kind(kind):
                daemon.stop()

    def start_daemons(self, kind: str) -> None:
        for node in self.nodes:
            for daemon in node.daemons_of_kind(kind):
                daemon.start()

    def connection(self, account: str = "test", **kwargs) -> swiftclient.Connection:
        """A fresh auth-v1 swiftclient Connection through the proxy."""
        import swiftclient

        user, key = self.accounts[account]
        return swiftclient.Connection(authurl=self.auth_url, user=user, key=key,
                                      auth_version="1", **kwargs)

    # -- for another supervisor (the launcher's setup command) --------------

    def write_configs(self, memcache: str, log_port: int | None = None) -> None:
        """Write swift.conf and every server's config; logs to /dev/log without log_port."""
        log = "" if log_port is None else LOG_CONF.format(host=HOST, log_port=log_port)
        (self.workdir / "swift.conf").write_text(SWIFT_CONF)
        for node in self.nodes:
            node.write_configs(self.workdir, log)
        proxy = PROXY_CONF.format(auth="tempauth", token_life=86400,
                                  users=tempauth_users(), memcache=memcache,
                                  storage_url_scheme="default", proxy_options=PROXY_OPTIONS)
        self.proxy.conf.write_text(PROXY_DEFAULTS.format(workdir=self.workdir, log=log) + proxy)

    def ring_ports(self) -> dict[str, list[int]]:
        """build_rings' ports: each server kind's, node by node."""
        return {server: [node.servers[server].port for node in self.nodes]
                for server in STORAGE_SERVERS}

    def processes(self) -> list[dict]:
        """Every process of the cluster but memcached, for a supervisor to run.

        Each: its name, its node (None for the proxy), its port if it is a
        server (it answers GET /healthcheck there once up) and its command.
        """
        processes = [{"name": "proxy-server", "node": None, "port": self.port,
                      "command": self.proxy.command()}]
        for node in self.nodes:
            processes += [{"name": f"node{node.number}-{kind}-server", "node": node.number,
                           "port": server.port, "command": server.command()}
                          for kind, server in node.servers.items()]
            processes += [{"name": f"node{node.number}-{daemon.kind}", "node": node.number,
                           "port": None, "command": daemon.command()}
                          for daemon in node.daemons]
        return processes

    # -- helpers -------------------------------------------------------------

    def _storage_servers(self) -> list[ClusterServer]:
        return [server for node in self.nodes for server in node.servers.values()]

    def _start_servers(self, servers: list[ClusterServer], timeout: float) -> None:
        """Start servers side by side: each takes about a second to import swift."""
        with concurrent.futures.ThreadPoolExecutor(max(len(servers), 1)) as pool:
            for started in [pool.submit(server.start, timeout) for server in servers]:
                started.result()


if __name__ == "__main__":
    main()
