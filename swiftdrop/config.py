"""Read and validate ``/etc/swiftdrop.ini``.

The file keeps the earlier SwiftDrop's shape: ``[DEFAULT]`` is the catch-all
destination, every other section routes the addresses in its ``recipient``
key to its own container, possibly in another account. Named sections inherit
every key from ``[DEFAULT]`` except ``recipient``; an empty value in a section
drops an inherited one (``tenant_name =``).

Everything is checked up front so that a typo stops the service at start with
the file, section and key named, instead of turning into 451s at 3 a.m.
"""

from dataclasses import dataclass, field
import os
import re

from configobj import ConfigObj, ConfigObjError

from .lease import HEARTBEAT_ROOM, LEASE_MARGIN, longest_request, shortest_lease
from .verdicts import REFUSABLE

DEFAULT_PATH = "/etc/swiftdrop.ini"
CATCH_ALL = "DEFAULT"

# os_options that swiftclient's get_auth() understands; anything else is a typo
# that would silently be ignored by swiftclient.
OS_OPTIONS = frozenset({
    "tenant_id", "tenant_name", "project_id", "project_name",
    "user_id", "user_domain_id", "user_domain_name",
    "project_domain_id", "project_domain_name",
    "service_type", "endpoint_type", "interface", "region_name",
    "auth_type", "application_credential_id", "application_credential_secret",
    "object_storage_url",
})
SCALAR_KEYS = frozenset({
    "container", "auth_version", "authurl", "user", "key", "tenant_name",
    "cacert", "insecure", "timeout", "retries", "create_container",
    # read by the queue tools only (swiftdrop queue)
    "queue_lock", "queue_redis_url", "queue_lease", "queue_max_attempts",
    "queue_retry_delay", "queue_retry_longest", "queue_command_timeout", "queue_dedup_window",
})
# Keys whose value is a comma-separated list.
LIST_KEYS = frozenset({"recipient", "reject_verdicts"})
QUEUE_LOCKS = ("swift", "redis")
AUTH_VERSIONS = {"1": "1.0", "1.0": "1.0", "2": "2.0", "2.0": "2.0", "3": "3"}
BOOLEANS = {"true": True, "yes": True, "on": True, "1": True,
            "false": False, "no": False, "off": False, "0": False}
ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")

DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 2


class ConfigError(Exception):
    """A configuration problem, worded for the operator who has to fix it."""

    def __init__(self, path, section, key, problem):
        where = path
        if section is not None:
            where += f": [{section}]"
        if key is not None:
            where += f" {key}"
        super().__init__(f"{where}: {problem}")
        self.path, self.section, self.key = path, section, key


@dataclass(frozen=True)
class Account:
    """Everything swiftclient needs to authenticate; equal settings share one token."""

    authurl: str
    user: str
    key: str = field(repr=False)
    auth_version: str = "1.0"
    tenant_name: str | None = None
    os_options: tuple = ()
    cacert: str | None = None
    insecure: bool = False
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES

    def describe(self):
        """A loggable identity of the account: no key, no token."""
        options = dict(self.os_options)
        project = options.get("project_name") or self.tenant_name
        who = f"{project}:{self.user}" if project else self.user
        if options.get("auth_type") == "v3applicationcredential":
            who = f"application credential {options.get('application_credential_id')}"
        return f"{who} at {self.authurl} (auth v{self.auth_version})"


@dataclass(frozen=True)
class QueueSettings:
    """How consumers work through this destination's container (swiftdrop queue)."""

    lock: str = "swift"
    redis_url: str | None = None
    lease: float = 300.0
    # 60 s doubling up to an hour, 30 attempts: a consumer may be down for
    # a day (24 h 3 min, swiftdrop.queue.finish.retry_schedule) before its
    # messages go to failed/; Mailgun retries for 8 h, Postmark ~10 h, SendGrid 3 days.
    max_attempts: int = 30
    retry_delay: float = 60.0
    retry_longest: float = 3600.0
    # What one run of a worker's command may take before it is killed and
    # its message retried; 0: no limit (a hung command holds its message).
    command_timeout: float = 900.0
    dedup_window: float = 86400.0


@dataclass(frozen=True)
class Destination:
    """One routing section: where the mail for its recipients goes."""

    section: str
    recipients: tuple
    container: str
    account: Account
    create_container: bool = False
    queue: QueueSettings = QueueSettings()
    # Verdicts that get a message refused (550) instead of stored; () tags only.
    reject_verdicts: tuple = ()

    @property
    def target(self):
        """Two sections naming the same account and container are one copy."""
        return (self.account, self.container)


@dataclass(frozen=True)
class Config:
    path: str
    destinations: tuple

    @property
    def catch_all(self):
        return self.destinations[0]


def load(path=DEFAULT_PATH):
    """Parse and validate the ini at `path`; raise ConfigError on any problem."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as error:
        raise ConfigError(path, None, None, f"cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(path, None, None, f"not UTF-8: {error}") from None
    try:
        parsed = ConfigObj(lines, interpolation=False, list_values=True,
                           file_error=False, raise_errors=True)
    except ConfigObjError as error:
        raise ConfigError(path, None, None, str(error)) from None
    return _validate(path, parsed)


def _validate(path, parsed):
    for key in parsed.scalars:
        raise ConfigError(path, None, key, "is outside any section; put it under [DEFAULT]")
    if CATCH_ALL not in parsed.sections:
        raise ConfigError(path, CATCH_ALL, None,
                          "section missing: it is the catch-all destination")
    for name in parsed.sections:
        for sub in parsed[name].sections:
            raise ConfigError(path, name, None, f"nested section [[{sub}]] is not supported")
        for key in parsed[name].scalars:
            _check_key_name(path, name, key)

    defaults = parsed[CATCH_ALL]
    order = [CATCH_ALL] + [name for name in parsed.sections if name != CATCH_ALL]
    destinations, owners = [], {}
    for name in order:
        section = _Section(path, name, parsed[name], None if name == CATCH_ALL else defaults)
        recipients = _recipients(section)
        for address in recipients:
            if address in owners:
                raise ConfigError(path, name, "recipient",
                                  f"{address} is already routed by [{owners[address]}]")
            owners[address] = name
        account = _account(section)
        destinations.append(Destination(
            section=name,
            recipients=recipients,
            container=_container(section),
            account=account,
            create_container=section.boolean("create_container", False),
            queue=_queue(section, account),
            reject_verdicts=_reject_verdicts(section),
        ))
    return Config(path=path, destinations=tuple(destinations))


def _check_key_name(path, section, key):
    if key in LIST_KEYS or key in SCALAR_KEYS:
        return
    if key.startswith("os_options_"):
        option = key[len("os_options_"):]
        if option in OS_OPTIONS:
            return
        raise ConfigError(path, section, key,
                          f"unknown os_options name {option!r}; known: "
                          + ", ".join(sorted(OS_OPTIONS)))
    raise ConfigError(path, section, key, "unknown key")


class _Section:
    """A section's values with [DEFAULT] inheritance and error context."""

    def __init__(self, path, name, values, defaults):
        self.path, self.name, self.values, self.defaults = path, name, values, defaults

    def error(self, key, problem):
        return ConfigError(self.path, self.name, key, problem)

    def raw(self, key, inherit=True):
        if key in self.values:
            value = self.values[key]
        elif inherit and self.defaults is not None:
            value = self.defaults.get(key)
        else:
            value = None
        if isinstance(value, list) and key not in LIST_KEYS:
            raise self.error(key, "must be a single value; quote it if it contains a comma")
        if isinstance(value, str):
            value = value.strip()
        return value if value not in ("", None) else None

    def required(self, key):
        value = self.raw(key)
        if value is None:
            raise self.error(key, "is required")
        return value

    def boolean(self, key, default):
        value = self.raw(key)
        if value is None:
            return default
        try:
            return BOOLEANS[value.lower()]
        except KeyError:
            raise self.error(key, f"{value!r} is not a boolean (true/false)") from None

    def number(self, key, kind, default, minimum):
        value = self.raw(key)
        if value is None:
            return default
        try:
            number = kind(value)
        except ValueError:
            raise self.error(key, f"{value!r} is not a number") from None
        if number < minimum:
            raise self.error(key, f"must be at least {minimum}")
        return number

    def os_options(self):
        names = {key for key in self.values.scalars if key.startswith("os_options_")}
        if self.defaults is not None:
            names |= {key for key in self.defaults.scalars if key.startswith("os_options_")}
        options = {}
        for key in sorted(names):
            value = self.raw(key)
            if value is not None:
                options[key[len("os_options_"):]] = value
        return tuple(sorted(options.items()))


def _recipients(section):
    value = section.raw("recipient", inherit=False)
    addresses = value if isinstance(value, list) else [] if value is None else [value]
    addresses = [address.strip() for address in addresses if address.strip()]
    if section.name == CATCH_ALL:
        if addresses not in ([], [CATCH_ALL]):
            raise section.error("recipient", "must be DEFAULT or empty in the catch-all section")
        return ()
    if not addresses:
        raise section.error("recipient", "is required: which addresses go to this section?")
    for address in addresses:
        if not ADDRESS.match(address):
            raise section.error("recipient", f"{address!r} is not a full address (local@domain)")
    return tuple(dict.fromkeys(address.casefold() for address in addresses))


def _reject_verdicts(section):
    """reject_verdicts: which verdicts this destination refuses; inherited from [DEFAULT]."""
    value = section.raw("reject_verdicts")
    names = value if isinstance(value, list) else [] if value is None else [value]
    names = [name.strip().lower() for name in names if name.strip()]
    for name in names:
        if name not in REFUSABLE:
            raise section.error("reject_verdicts", f"{name!r} is not one of "
                                + ", ".join(sorted(REFUSABLE)))
    return tuple(dict.fromkeys(names))


def _container(section):
    container = section.required("container")
    if "/" in container or len(container.encode()) > 256:
        raise section.error("container", f"{container!r} is not a valid container name")
    return container


def _queue(section, account):
    lock = section.raw("queue_lock") or "swift"
    if lock not in QUEUE_LOCKS:
        raise section.error("queue_lock", f"{lock!r} is not one of {', '.join(QUEUE_LOCKS)}")
    redis_url = section.raw("queue_redis_url")
    if lock == "redis" and not (redis_url or "").startswith(("redis://", "rediss://", "unix://")):
        raise section.error("queue_redis_url", "is required (redis://host:port/db) with "
                                               "queue_lock = redis")
    defaults = QueueSettings()
    return QueueSettings(
        lock=lock,
        redis_url=redis_url,
        lease=_lease(section, account, defaults.lease),
        max_attempts=section.number("queue_max_attempts", int, defaults.max_attempts, 1),
        retry_delay=section.number("queue_retry_delay", float, defaults.retry_delay, 0),
        retry_longest=section.number("queue_retry_longest", float, defaults.retry_longest, 0),
        command_timeout=section.number("queue_command_timeout", float,
                                       defaults.command_timeout, 0),
        dedup_window=section.number("queue_dedup_window", float, defaults.dedup_window, 0),
    )


def _lease(section, account, default):
    """queue_lease: long enough for one whole Swift request of this account (swiftdrop.lease).

    A lease set in the ini that is shorter is an error; the default grows to fit.
    """
    shortest = shortest_lease(account.timeout, account.retries)
    lease = section.number("queue_lease", float, None, 1)
    if lease is None:
        return max(default, shortest)
    if lease < shortest:
        longest = longest_request(account.timeout, account.retries)
        attempts = account.retries + 1
        raise section.error("queue_lease", (
            f"{lease:g} s is too short: make it at least {shortest}, or lower timeout or "
            f"retries. One Swift request may take {longest:g} s here (timeout = "
            f"{account.timeout:g} s for each of {attempts} attempt{'s' * (attempts > 1)}, "
            f"retries = {account.retries}, and {longest - account.timeout * attempts:g} s of "
            f"back-off between them), and a lock needs {LEASE_MARGIN + HEARTBEAT_ROOM:g} s "
            "more: Swift rounds its expiry down to a whole second, and the refresh needs "
            "room"))
    return lease


def _account(section):
    authurl = section.required("authurl")
    if not authurl.startswith(("http://", "https://")):
        raise section.error("authurl", f"{authurl!r} is not an http(s) URL")
    version = section.raw("auth_version") or "1.0"
    if version not in AUTH_VERSIONS:
        raise section.error("auth_version", f"{version!r} is not one of 1, 2, 3")
    cacert = section.raw("cacert")
    if cacert is not None and not os.path.isfile(cacert):
        raise section.error("cacert", f"{cacert!r} is not a file")
    return Account(
        authurl=authurl,
        user=section.required("user"),
        key=section.required("key"),
        auth_version=AUTH_VERSIONS[version],
        tenant_name=section.raw("tenant_name"),
        os_options=section.os_options(),
        cacert=cacert,
        insecure=section.boolean("insecure", False),
        timeout=section.number("timeout", float, DEFAULT_TIMEOUT, 0.1),
        retries=section.number("retries", int, DEFAULT_RETRIES, 0),
    )
