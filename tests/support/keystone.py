"""A real OpenStack Keystone (identity API v3) on 127.0.0.1 for tests.

Production SwiftDrop authenticates with ``auth_version = 3`` against
Keystone, so tests run Keystone's own code (Debian's ``python3-keystone``)
rather than a fake token endpoint. :mod:`tests.support.swiftserver` can put
Swift behind it (``SwiftServer(..., keystone=...)``).

Two halves live here, as in :mod:`tests.support.swiftserver`:

* a launcher, ``python3 -m tests.support.keystone --workdir DIR --port
  PORT``, that prepares a SQLite database (WAL mode) and fernet key
  repositories under DIR, runs the equivalent of ``keystone-manage db_sync``,
  ``fernet_setup``, ``credential_setup`` and ``bootstrap`` in-process (each
  ``keystone-manage`` call would pay Keystone's ~4 s of imports again), then
  serves Keystone's WSGI app with a threading ``wsgiref`` server and prints
  ``READY <port>``;
* :class:`KeystoneServer`, which pytest uses to run that launcher and then,
  as the bootstrap admin and through the HTTP API, creates the mail project
  and user, the ``swift`` service user and, on request, Swift's catalog
  entry.

Passwords are hashed with Keystone's defaults (bcrypt, 12 rounds), so an
authentication costs what it costs in production: most of a second here.

Faults for the fault suite: :meth:`KeystoneServer.set_fault` makes Keystone
answer authentication requests (``POST /v3/auth/tokens``) with a status
(500, 503) or accept them and never answer (``silent``); the switch is a
file in the workdir that a middleware around Keystone's app reads per
request. Token validation (Swift's authtoken) is left alone. Refusing
connections is the real thing: stop(), then start() on the same port.
"""
# ruff: noqa: PLC0415 (lazy imports on purpose: keystone takes ~4 s to import)

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http
import json
import os
import pathlib
import signal
import socketserver
import sqlite3
import sys
import threading
import time
import typing
from wsgiref import simple_server

from tests.support.launched import HOST, LaunchedServer
from tests.support.ports import reserve_port
from tests.support.swiftserver import REPO_ROOT, child_env

if typing.TYPE_CHECKING:
    import swiftclient

DOMAIN = "Default"
REGION = "RegionOne"
ADMIN_PASSWORD = "keystone-admin-secret"  # user admin, project admin
FAULT_FILE = "fault"  # in the workdir: read by FaultSwitch


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A Keystone user, the project it works in, and its role there."""

    user: str
    password: str
    project: str
    role: str
    domain: str = DOMAIN


# The mailbox owner SwiftDrop authenticates as; "member" is one of the
# operator_roles of Swift's keystoneauth, so it owns AUTH_<project id>.
MAIL = Credentials("mailuser", "mail-secret", "mailproject", "member")
# The user Swift's authtoken middleware validates tokens with.
SERVICE = Credentials("swift", "swift-secret", "service", "admin")

KEYSTONE_CONF = """\
[DEFAULT]
log_file = {workdir}/keystone.log
use_stderr = {verbose}

[database]
connection = sqlite:///{workdir}/keystone.db

[token]
provider = fernet
expiration = {token_life}

[fernet_tokens]
key_repository = {workdir}/fernet-keys
[fernet_receipts]
key_repository = {workdir}/fernet-keys
[credential]
key_repository = {workdir}/credential-keys

# Without a cache every request rebuilds the caller's token from the
# database; production Keystone caches too (in memcached, we have one process).
[cache]
enabled = true
backend = dogpile.cache.memory
"""


# --------------------------------------------------------------------------
# Launcher (runs in the child process)
# --------------------------------------------------------------------------


def write_config(workdir: pathlib.Path, token_life: int,
                 verbose: bool) -> pathlib.Path:
    """Write keystone.conf (from scratch on each start) and return its path."""
    path = workdir / "keystone.conf"
    path.write_text(KEYSTONE_CONF.format(workdir=workdir, token_life=token_life,
                                         verbose=str(verbose).lower()))
    return path


def use_wal(database: pathlib.Path) -> None:
    """Create the database in WAL mode, which persists in the file.

    Readers then never wait for a writer: requests run in threads here.
    """
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("PRAGMA journal_mode=WAL")


def setup_key_repositories() -> None:
    """``keystone-manage fernet_setup`` and ``credential_setup``, in-process.

    initialize_key_repository() leaves an initialized repository alone, so
    tokens issued before a restart stay valid.
    """
    from keystone.common import fernet_utils
    import keystone.conf
    from keystone.credential.providers import fernet as credential_fernet

    conf = keystone.conf.CONF
    uid, gid = os.getuid(), os.getgid()
    for group, max_keys in (
            ("fernet_tokens", conf.fernet_tokens.max_active_keys),
            ("credential", credential_fernet.MAX_ACTIVE_KEYS)):
        keys = fernet_utils.FernetUtils(getattr(conf, group).key_repository,
                                        max_keys, group)
        keys.create_key_directory(uid, gid)
        if keys.validate_key_repository(requires_write=True):
            keys.initialize_key_repository(uid, gid)


def bootstrap(public_url: str) -> None:
    """``keystone-manage bootstrap``, in-process; it is idempotent.

    Creates domain Default, project and user admin, roles admin, member and
    reader, region RegionOne and the identity service with its endpoints.
    Bootstrapper() loads Keystone's backends (once per process, it must
    come before the app is built).
    """
    from keystone.cmd.bootstrap import Bootstrapper

    bootstrapper = Bootstrapper()
    bootstrapper.admin_username = "admin"
    bootstrapper.admin_password = ADMIN_PASSWORD
    bootstrapper.project_name = "admin"
    bootstrapper.admin_role_name = "admin"
    bootstrapper.service_name = "keystone"
    bootstrapper.public_url = public_url
    bootstrapper.internal_url = public_url
    bootstrapper.admin_url = public_url
    bootstrapper.region_id = REGION
    bootstrapper.immutable_roles = True  # keystone-manage's default
    bootstrapper.bootstrap()


class ThreadingWSGIServer(socketserver.ThreadingMixIn,
                          simple_server.WSGIServer):
    """wsgiref, one thread per connection (like mod_wsgi's threads)."""

    daemon_threads = True


class QuietHandler(simple_server.WSGIRequestHandler):
    """No access log on stderr: keystone.log has every request already."""

    def log_message(self, format, *args) -> None:
        pass


class FaultSwitch:
    """WSGI middleware: disturb authentication requests as the fault file says.

    ``silent``: hold the request without a byte of answer until the fault
    is cleared; ``status N``: answer N at once. No file: pass everything.
    """

    def __init__(self, app, fault_file: pathlib.Path):
        self.app = app
        self.fault_file = fault_file

    def fault(self) -> str:
        try:
            return self.fault_file.read_text().strip()
        except FileNotFoundError:
            return ""

    def __call__(self, environ, start_response):
        is_auth = (environ["REQUEST_METHOD"] == "POST"
                   and environ.get("PATH_INFO", "").rstrip("/").endswith("/auth/tokens"))
        fault = self.fault() if is_auth else ""
        if fault == "silent":
            while self.fault() == "silent":
                time.sleep(0.1)
            fault = self.fault()
        if fault.startswith("status "):
            status = int(fault.split()[1])
            body = json.dumps({"error": {"code": status, "title": "Injected fault",
                                         "message": "fault suite"}}).encode()
            start_response(f"{status} {http.HTTPStatus(status).phrase}",
                           [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
            return [body]
        return self.app(environ, start_response)


def run(args: argparse.Namespace) -> None:
    """Prepare the database and keys, serve Keystone, print READY."""
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir, args.token_life, args.verbose)
    use_wal(workdir / "keystone.db")

    from keystone.common.sql import upgrades
    import keystone.server
    from keystone.server.flask import application, core

    del sys.argv[1:]  # oslo.config would parse our options as its own
    keystone.server.configure(config_files=[str(config)])
    upgrades.offline_sync_database_to_version()  # keystone-manage db_sync
    setup_key_repositories()
    # Listen first: bootstrap needs the port, which may be ours to pick.
    server = simple_server.make_server(HOST, args.port, None,
                                       server_class=ThreadingWSGIServer,
                                       handler_class=QuietHandler)
    port = server.server_address[1]
    bootstrap(f"http://{HOST}:{port}/v3")
    server.set_app(FaultSwitch(core.setup_app_middleware(
        application.application_factory("public")), workdir / FAULT_FILE))
    print(f"READY {port}", flush=True)
    # Nobody reads our stdout after READY; a full pipe must never block us.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    server.serve_forever()


def exit_now(signum, frame) -> None:
    """Exit at once on SIGTERM or when pytest dies; SQLite's WAL is safe."""
    os._exit(0)


def die_with_parent() -> None:
    """Exit when pytest dies, even by SIGKILL: we are then reparented.

    Not prctl(PR_SET_PDEATHSIG): that fires when the *thread* that started
    us ends, and the fault suite restarts Keystone from a scheduler thread
    that ends long before the test run.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=pathlib.Path, required=True)
    parser.add_argument("--port", type=int, required=True,
                        help="port to listen on (0 picks a free one)")
    parser.add_argument("--token-life", type=int, default=3600,
                        help="token lifetime in seconds ([token] expiration)")
    parser.add_argument("--verbose", action="store_true",
                        help="copy keystone's log to stderr")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_now)
    die_with_parent()
    run(args)


# --------------------------------------------------------------------------
# Pytest side
# --------------------------------------------------------------------------


class KeystoneServer(LaunchedServer):
    """Runs the launcher above as a child process and provisions users.

    The port is fixed at construction (it is in the catalog), and data
    lives in workdir, so stop()/start() keeps users and tokens valid.
    """

    name = "keystone"
    health_path = "/v3"
    health_timeout = 5

    def __init__(self, workdir: pathlib.Path, port: int | None = None,
                 token_life: int = 3600, verbose: bool = False):
        self.workdir = pathlib.Path(workdir).resolve()  # child runs elsewhere
        self.port = port or reserve_port()
        self.token_life = token_life
        self.verbose = verbose
        self.auth_url = f"http://{HOST}:{self.port}/v3"
        self.mail = MAIL
        self.service = SERVICE
        self.admin = Credentials("admin", ADMIN_PASSWORD, "admin", "admin")
        self._provisioned = False
        self._admin = None

    @property
    def log_path(self) -> pathlib.Path:
        return self.workdir / "keystone.log"

    def start(self, timeout: float = 60) -> None:
        """Start keystone, wait until it answers, create users once."""
        if self.process is not None:
            raise RuntimeError("keystone is already running")
        command = [
            sys.executable, "-m", "tests.support.keystone",
            "--workdir", str(self.workdir), "--port", str(self.port),
            "--token-life", str(self.token_life),
        ] + (["--verbose"] if self.verbose else [])
        env = child_env()
        # Keystone imports eventlet but never monkey-patches; green DNS
        # would only cost ~0.5 s of imports.
        env.setdefault("EVENTLET_NO_GREENDNS", "yes")
        self.launch(command, cwd=REPO_ROOT, env=env, timeout=timeout)
        if not self._provisioned:
            try:
                self.provision()
            except BaseException:
                self.kill()
                raise
            self._provisioned = True

    def where_to_look(self) -> str:
        return f"see {self.log_path}"

    def admin_client(self):
        """A keystoneclient v3 Client as the bootstrap admin (cached).

        Its session re-authenticates by itself when the token nears expiry.
        """
        from keystoneauth1 import session
        from keystoneclient.v3 import client

        if self._admin is None:
            self._admin = client.Client(session=session.Session(
                auth=self.password_auth(self.admin)))
        return self._admin

    def password_auth(self, who: Credentials):
        """A keystoneauth v3 Password plugin, project-scoped."""
        from keystoneauth1.identity import v3

        return v3.Password(auth_url=self.auth_url, username=who.user,
                           password=who.password, user_domain_name=who.domain,
                           project_name=who.project,
                           project_domain_name=who.domain)

    def provision(self) -> None:
        """Create (or find) the mail and the service user, via the API."""
        for who in (self.mail, self.service):
            self.create_user(who)

    def create_user(self, who: Credentials) -> tuple[str, str]:
        """Create (or find) `who` with its role in its project; (project id, user id)."""
        admin = self.admin_client()
        project = _find_or_create(
            admin.projects, name=who.project, domain="default")
        user = _find_or_create(
            admin.users, name=who.user, domain="default",
            password=who.password, default_project=project)
        role = admin.roles.find(name=who.role)
        admin.roles.grant(role, user=user, project=project)
        return project.id, user.id

    def set_fault(self, fault: str = "") -> None:
        """``silent``, ``status 503``...; "" clears it. Affects authentication only."""
        path = self.workdir / FAULT_FILE
        if fault:
            temporary = path.with_suffix(".new")
            temporary.write_text(fault)
            temporary.replace(path)
        else:
            path.unlink(missing_ok=True)

    def application_credential(self, name: str) -> tuple[str, str]:
        """(id, secret) of a new application credential of the mail user."""
        from keystoneauth1 import session
        from keystoneclient.v3 import client

        mail = client.Client(session=session.Session(auth=self.password_auth(self.mail)))
        user_id = mail.session.get_user_id()
        credential = mail.application_credentials.create(name=name, user=user_id)
        return credential.id, credential.secret

    def revoke(self, token: str) -> None:
        """Revoke `token` in Keystone, as an operator or a password change would."""
        self.admin_client().tokens.revoke_token(token)

    def register_swift(self, proxy_port: int) -> str:
        """Put Swift (object-store) in the catalog; return its URL template.

        Replaces any older object-store endpoints, e.g. of a previous Swift.
        """
        url = f"http://{HOST}:{proxy_port}/v1/AUTH_%(project_id)s"
        admin = self.admin_client()
        service = _find_or_create(admin.services, name="swift",
                                  type="object-store")
        endpoints = admin.endpoints.list(service=service)
        if sorted((e.interface, e.url) for e in endpoints) == sorted(
                (interface, url) for interface in ("admin", "internal", "public")):
            return url
        for endpoint in endpoints:
            admin.endpoints.delete(endpoint)
        for interface in ("public", "internal", "admin"):
            admin.endpoints.create(service, url, interface=interface,
                                   region=REGION)
        return url

    def connection(self, who: Credentials | None = None,
                   **kwargs) -> swiftclient.Connection:
        """A fresh auth-v3 swiftclient Connection (default: the mail user)."""
        import swiftclient

        who = who or self.mail
        options = {"project_name": who.project,
                   "project_domain_name": who.domain,
                   "user_domain_name": who.domain}
        options.update(kwargs.pop("os_options", {}))
        return swiftclient.Connection(authurl=self.auth_url, user=who.user,
                                      key=who.password, auth_version="3",
                                      os_options=options, **kwargs)


def _find_or_create(manager, **attributes):
    """The one resource named attributes["name"] (in domain), else a new one."""
    filters = {key: attributes[key] for key in ("name", "domain", "type")
               if key in attributes}
    found = manager.list(**filters)
    return found[0] if found else manager.create(**attributes)


if __name__ == "__main__":
    main()
