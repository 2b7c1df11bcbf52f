"""Read and validate ``/etc/swiftdrop.ini``.

The file keeps the earlier SwiftDrop's shape: ``[DEFAULT]`` is the catch-all
destination, every other section routes the addresses in its ``recipient``
key to its own container, possibly in another account. Named sections inherit
every key from ``[DEFAULT]`` except ``recipient``; an empty value in a section
drops an inherited one (``tenant_name =``).

Everything is checked up front so that a typo stops the service at start with
the file, section and key named, instead of turning into 451s at 3 a.m.
"""

import dataclasses
from dataclasses import dataclass, field
import ipaddress
import math
import os
import re
import urllib.parse

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
    "queue_index", "queue_lock", "queue_redis_url", "queue_lease", "queue_max_attempts",
    "queue_retry_delay", "queue_retry_longest", "queue_command_timeout", "queue_dedup_window",
    # read by the webhook worker only (swiftdrop queue run without a command)
    "webhook_url", "webhook_secret", "webhook_format", "webhook_timeout", "webhook_insecure",
    "webhook_cacert", "webhook_inline_limit", "webhook_link_lifetime", "webhook_tempurl_key",
})
# Keys whose value is a comma-separated list.
LIST_KEYS = frozenset({"recipient", "reject_verdicts"})
QUEUE_LOCKS = ("swift", "redis")
QUEUE_INDEXES = ("listing", "redis-stream")
DEFAULT_GROUP = "default"  # the consumer group of queue commands without --group
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
WEBHOOK_FORMATS = ("json", "raw")
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

    # listing: consumers list the container and move bodies between prefixes;
    # redis-stream: the filter announces each copy in a Redis stream and the
    # state lives there (swiftdrop.queue.stream, docs/queue.md).
    index: str = "listing"
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
class WebhookSettings:
    """Where and how the webhook worker POSTs this destination's messages (docs/webhooks.md).

    The secret signs every request and the TempURL key signs every link:
    neither is ever logged, nor shown by ``repr``.
    """

    url: str
    secret: str = field(repr=False)
    format: str = "json"
    timeout: float = 30.0
    insecure: bool = False
    cacert: str | None = None
    # Attachments larger than this are stored as objects of their own and linked.
    inline_limit: int = 262144
    link_lifetime: float = 604800.0  # 7 days
    tempurl_key: str | None = field(default=None, repr=False)


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
    # What the webhook worker POSTs to; None without webhook_url.
    webhook: WebhookSettings | None = None
    # The other webhook_* keys, validated, for ``queue run --webhook URL``
    # (url empty; secret empty unless webhook_secret is set).
    webhook_keys: WebhookSettings = WebhookSettings(url="", secret="")

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
        queue = _queue(section, account)
        webhook_keys = _webhook(section, queue)
        destinations.append(Destination(
            section=name,
            recipients=recipients,
            container=_container(section),
            account=account,
            create_container=section.boolean("create_container", False),
            queue=queue,
            reject_verdicts=_reject_verdicts(section),
            webhook=webhook_keys if webhook_keys.url else None,
            webhook_keys=webhook_keys,
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
        if not math.isfinite(number):  # nan, inf, 1e400: every socket timeout would fail
            raise self.error(key, f"{value!r} is not a finite number")
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
    index = section.raw("queue_index") or "listing"
    if index not in QUEUE_INDEXES:
        raise section.error("queue_index", f"{index!r} is not one of {', '.join(QUEUE_INDEXES)}")
    redis_url = section.raw("queue_redis_url")
    for key, value, needs in (("queue_lock", lock, "redis"),
                              ("queue_index", index, "redis-stream")):
        if value == needs and not (redis_url or "").startswith(REDIS_SCHEMES):
            raise section.error("queue_redis_url", "is required (redis://host:port/db) with "
                                                   f"{key} = {needs}")
    defaults = QueueSettings()
    return QueueSettings(
        index=index,
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


def _webhook(section, queue):
    """The webhook_* keys; a webhook_url needs its webhook_secret: no unsigned POSTs."""
    defaults = WebhookSettings(url="", secret="")
    url, secret = section.raw("webhook_url") or "", section.raw("webhook_secret") or ""
    insecure = section.boolean("webhook_insecure", defaults.insecure)
    if url:
        problem = webhook_url_problem(url, insecure)
        if problem:
            raise section.error("webhook_url", problem)
        if not secret:
            raise section.error("webhook_secret", "is required with webhook_url: every POST "
                                "is signed with it")
    webhook_format = section.raw("webhook_format") or defaults.format
    if webhook_format not in WEBHOOK_FORMATS:
        raise section.error("webhook_format", f"{webhook_format!r} is not one of "
                            + ", ".join(WEBHOOK_FORMATS))
    timeout = section.number("webhook_timeout", float, defaults.timeout, 0.1)
    if url or section.raw("webhook_timeout") is not None:
        problem = webhook_timeout_problem(timeout, queue.lease)
        if problem:
            raise section.error("webhook_timeout", problem)
    cacert = section.raw("webhook_cacert")
    if cacert is not None and not os.path.isfile(cacert):
        raise section.error("webhook_cacert", f"{cacert!r} is not a file")
    return WebhookSettings(
        url=url, secret=secret, format=webhook_format, timeout=timeout, insecure=insecure,
        cacert=cacert,
        inline_limit=section.number("webhook_inline_limit", int, defaults.inline_limit, 0),
        link_lifetime=section.number("webhook_link_lifetime", float, defaults.link_lifetime, 1),
        tempurl_key=section.raw("webhook_tempurl_key"))


def webhook_timeout_problem(timeout, lease):
    """Why a POST may not take `timeout` seconds under a `lease` (None: it may).

    The heartbeat keeps the lock while a POST runs; a POST longer than a
    lease would outlast the lock whenever one refresh fails.
    """
    if timeout >= lease:
        return f"{timeout:g} s must be shorter than the lease (queue_lease, {lease:g} s here)"
    return None


def webhook_override(destination, url, secret=None, webhook_format=None):
    """The destination's webhook with ``queue run``'s --webhook URL and --webhook-format.

    The ini's other webhook_* keys apply; the secret is webhook_secret, else
    `secret` (the environment's SWIFTDROP_WEBHOOK_SECRET). Raises ValueError
    saying what is missing or wrong.
    """
    keys = destination.webhook if url is None else destination.webhook_keys
    if keys is None:
        raise ValueError(f"[{destination.section}] has no webhook_url")
    changes = {"format": webhook_format or keys.format}
    if url is not None:
        problem = webhook_url_problem(url, keys.insecure)
        if problem:
            raise ValueError(problem)
        if not (keys.secret or secret):
            raise ValueError(f"--webhook needs a secret to sign with: webhook_secret in "
                             f"[{destination.section}], or SWIFTDROP_WEBHOOK_SECRET in the "
                             "environment")
        problem = webhook_timeout_problem(keys.timeout, destination.queue.lease)
        if problem:
            raise ValueError(f"webhook_timeout: {problem}")
        changes.update(url=url, secret=keys.secret or secret)
    return dataclasses.replace(keys, **changes)


def webhook_url_problem(url, insecure=False):
    """What is wrong with a webhook URL (None: nothing), for the ini and ``--webhook``.

    http:// is for a receiver on this host (loopback): anywhere else the
    mail would cross the network unencrypted and to a host nobody verified,
    unless webhook_insecure says that is meant.
    """
    parsed, shown = urllib.parse.urlsplit(url), repr(public_url(url))
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return f"{shown} is not an http:// or https:// URL"
    try:
        parsed.port  # noqa: B018 - it raises for a port that is not a number
    except ValueError:
        return f"{shown} has no valid port"
    if parsed.scheme == "http" and not insecure and not is_loopback(parsed.hostname):
        return (f"{shown} is plain http to another host: use https://, or set "
                "webhook_insecure = true if the network is yours")
    return None


def public_url(url):
    """`url` without user:password and query: what logs and errors may show of it.

    A receiver's URL often carries a credential (``https://user:pass@host/``,
    ``?token=``) that must not end up in a journal.
    """
    parsed = urllib.parse.urlsplit(url)
    host = parsed.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parsed.scheme, host, parsed.path, "", ""))


def is_loopback(host):
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves the machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
