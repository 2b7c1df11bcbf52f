"""One pass of Swift's own object-expirer over a test Swift (tests.support.swiftserver).

``python3 -m tests.support.expirer --swift-dir DIR --memcache HOST:PORT``
runs Swift's container-updater once, then :class:`swift.obj.expirer.ObjectExpirer`
once, as the ``swift-container-updater`` and ``swift-object-expirer``
daemons of a production cluster would: the object servers queue every PUT
with ``X-Delete-At`` in containers of the ``.expiring_objects`` account, the
updater lists those containers in the account, and the expirer deletes each
object that is due through an internal proxy built from the same rings.
Debian's ``python3-swift`` has the modules without the daemons' scripts,
hence this runner.

:func:`expire_once` is the pytest side.
"""
# ruff: noqa: PLC0415 (eventlet must patch before swift is imported)

from __future__ import annotations

import argparse
import pathlib
import socket
import subprocess
import sys

from tests.support.swiftserver import HOST, REPO_ROOT, child_env

INTERNAL_CLIENT_CONF = """\
[DEFAULT]
swift_dir = {swift_dir}
log_udp_host = {host}
log_udp_port = {log_port}

[pipeline:main]
pipeline = catch_errors proxy-logging cache proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:cache]
use = egg:swift#memcache
memcache_servers = {memcache}

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:proxy-logging]
use = egg:swift#proxy_logging
"""


def run(swift_dir: pathlib.Path, memcache: str) -> None:
    import eventlet

    eventlet.monkey_patch()
    from swift.common import storage_policy, utils
    from swift.container.updater import ContainerUpdater
    from swift.obj.expirer import ObjectExpirer

    utils.set_swift_dir(str(swift_dir))
    storage_policy.reload_storage_policies()
    # Swift logs to syslog, and there is no /dev/log: to a UDP port of ours instead.
    log_sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    log_sink.bind((HOST, 0))
    conf_path = swift_dir / "internal-client.conf"
    log_port = log_sink.getsockname()[1]
    conf_path.write_text(INTERNAL_CLIENT_CONF.format(
        swift_dir=swift_dir, host=HOST, log_port=log_port, memcache=memcache))
    # The object servers of Swift 2.30 queue expiries in the legacy
    # .expiring_objects account only; a daemon conf not named *expirer*
    # must be told to read it.
    conf = {"__file__": str(conf_path), "swift_dir": str(swift_dir),
            "internal_client_conf_path": str(conf_path), "dequeue_from_legacy": "true",
            "recon_cache_path": str(swift_dir), "log_udp_host": HOST,
            "log_udp_port": str(log_port)}
    # Their logs go to stderr too, which pytest shows when a test fails.
    # The queue's containers reach the .expiring_objects account's listing
    # only through the container-updater, as in a cluster: it goes first.
    ContainerUpdater({**conf, "devices": str(swift_dir / "devices"), "mount_check": "false"},
                     logger=utils.get_logger(conf, log_route="container-updater",
                                             log_to_console=True)).run_once()
    ObjectExpirer(conf, logger=utils.get_logger(conf, log_route="object-expirer",
                                                log_to_console=True)).run_once()


def expire_once(swift, timeout: float = 60) -> None:
    """Run one expirer pass over `swift` (a started SwiftServer); raise if it failed."""
    subprocess.run([sys.executable, "-m", "tests.support.expirer",
                    "--swift-dir", str(swift.workdir),
                    "--memcache", f"{HOST}:{swift.memcache_port}"],
                   cwd=REPO_ROOT, env=child_env(), check=True, timeout=timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swift-dir", type=pathlib.Path, required=True)
    parser.add_argument("--memcache", required=True)
    arguments = parser.parse_args()
    run(arguments.swift_dir.resolve(), arguments.memcache)


if __name__ == "__main__":
    main()
