"""Read and validate ``/etc/swiftdrop.ini``.

The file keeps the earlier SwiftDrop's shape: ``[DEFAULT]`` is the catch-all
destination, every other section routes the addresses in its ``recipient``
key to its own container, possibly in another account. Named sections inherit
every key from ``[DEFAULT]`` except ``recipient``; an empty value in a section
drops an inherited one (``tenant_name =``).

What each key is (type, range, default) is the table in swiftdrop.settings.
Everything is checked up front so that a typo stops the service at start with
the file, section and key named, instead of turning into 451s at 3 a.m.; and
every problem of the file is reported at once, not the first only.
"""

import dataclasses
from dataclasses import dataclass, field
import ipaddress
import math
import os
import re
import urllib.parse

from configobj import ConfigObj, ConfigObjError

from . import settings
from .lease import HEARTBEAT_ROOM, LEASE_MARGIN, longest_request, shortest_lease
from .settings import BY_NAME, OS_OPTIONS, OS_OPTIONS_PREFIX, setting_of
from .shards import shard_names

DEFAULT_PATH = "/etc/swiftdrop.ini"
CATCH_ALL = "DEFAULT"
LIST_KEYS = frozenset(s.name for s in settings.SETTINGS if s.kind == settings.LIST)
SCALAR_KEYS = frozenset(BY_NAME) - LIST_KEYS
QUEUE_LOCKS = BY_NAME["queue_lock"].choices
QUEUE_INDEXES = BY_NAME["queue_index"].choices
WEBHOOK_FORMATS = BY_NAME["webhook_format"].choices
DEFAULT_GROUP = "default"  # the consumer group of queue commands without --group
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# The loader takes the earlier SwiftDrop's "1.0" and "2.0" too.
AUTH_VERSIONS = {"1": "1.0", "1.0": "1.0", "2": "2.0", "2.0": "2.0", "3": "3"}
BOOLEANS = {"true": True, "yes": True, "on": True, "1": True,
            "false": False, "no": False, "off": False, "0": False}
ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")
# key = value#more, the value not quoted: configobj reads "value" and a comment.
CUT_BY_HASH = re.compile(r"^\s*([^\s=\[#]+)\s*=\s*([^\s\"'].*?\S#.*)$")
SECTION_LINE = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")

DEFAULT_TIMEOUT = BY_NAME["timeout"].default
DEFAULT_RETRIES = BY_NAME["retries"].default


class ConfigError(Exception):
    """Configuration problems, worded for the operator who has to fix them.

    One line per problem, each naming the file, section and key; `problems`
    holds them one by one, and path/section/key are the first one's.
    """

    def __init__(self, path, section, key, problem, *, more=()):
        where = path
        if section is not None:
            where += f": [{section}]"
        if key is not None:
            where += f" {key}"
        self.problem, self.line = problem, f"{where}: {problem}"
        self.problems = [self, *more]
        super().__init__("\n".join(error.line for error in self.problems))
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
    index: str = BY_NAME["queue_index"].default
    lock: str = BY_NAME["queue_lock"].default
    redis_url: str | None = None
    lease: float = BY_NAME["queue_lease"].default
    # 60 s doubling up to an hour, 30 attempts: a consumer may be down for
    # a day (24 h 3 min, swiftdrop.queue.finish.retry_schedule) before its
    # messages go to failed/; Mailgun retries for 8 h, Postmark ~10 h, SendGrid 3 days.
    max_attempts: int = BY_NAME["queue_max_attempts"].default
    retry_delay: float = BY_NAME["queue_retry_delay"].default
    retry_longest: float = BY_NAME["queue_retry_longest"].default
    # What one run of a worker's command may take before it is killed and
    # its message retried; 0: no limit (a hung command holds its message).
    command_timeout: float = BY_NAME["queue_command_timeout"].default
    dedup_window: float = BY_NAME["queue_dedup_window"].default


@dataclass(frozen=True)
class WebhookSettings:
    """Where and how the webhook worker POSTs this destination's messages (docs/webhooks.md).

    The secret signs every request and the TempURL key signs every link:
    neither is ever logged, nor shown by ``repr``.
    """

    url: str
    secret: str = field(repr=False)
    format: str = BY_NAME["webhook_format"].default
    timeout: float = BY_NAME["webhook_timeout"].default
    insecure: bool = False
    cacert: str | None = None
    # Attachments larger than this are stored as objects of their own and linked.
    inline_limit: int = BY_NAME["webhook_inline_limit"].default
    link_lifetime: float = BY_NAME["webhook_link_lifetime"].default
    tempurl_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Destination:
    """One routing section: where the mail for its recipients goes."""

    section: str
    recipients: tuple
    container: str
    account: Account
    create_container: bool = False
    # Containers the messages are spread over (swiftdrop.shards); shard 0 is `container`.
    container_shards: int = 1
    # Which of its section's shard containers this is (swiftdrop.shards.shard_destinations).
    shard: int = 0
    queue: QueueSettings = QueueSettings()
    # Verdicts that get a message refused (550) instead of stored; () tags only.
    reject_verdicts: tuple = ()
    # Seconds after which Swift's object-expirer deletes a stored copy; None: never.
    retention: float | None = None
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
    """Parse and validate the ini at `path`; raise ConfigError naming every problem."""
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
    problems = _Problems(path)
    _cut_by_hash(lines, problems)
    config = _validate(path, parsed, problems)
    problems.raise_any()
    return config


class _Problems:
    """Every problem found in one file, in the order found."""

    def __init__(self, path):
        self.path = path
        self.found = []

    def add(self, section, key, problem):
        if not any((error.section, error.key, error.problem) == (section, key, problem)
                   for error in self.found):  # a value read twice is one problem
            self.found.append(ConfigError(self.path, section, key, problem))

    def raise_any(self):
        if self.found:
            first, *more = self.found
            raise ConfigError(self.path, first.section, first.key, first.problem, more=more)


def _cut_by_hash(lines, problems):
    """An unquoted ``#`` right after a value's text: configobj ends the value there.

    Refused rather than warned: the text after it is gone (a password cut
    short fails later, at every message, as a 401), and the role quotes every
    value, so only a hand-written file meets this. A ``#`` after a space is a
    comment, as configobj means it.
    """
    section = None
    for line in lines:
        if header := SECTION_LINE.match(line):
            section = header.group(1)
            continue
        if match := CUT_BY_HASH.match(line):
            key = match.group(1)
            setting = setting_of(key)
            shown = "the value" if setting is None or setting.secret else repr(
                match.group(2).split("#", 1)[0].rstrip())
            problems.add(section, key, f"an unquoted # ends {shown} here and the rest is read "
                         "as a comment: quote the whole value (key = \"...#...\"), or put a "
                         "space before the # if a comment is meant")


def _validate(path, parsed, problems):
    for key in parsed.scalars:
        problems.add(None, key, "is outside any section; put it under [DEFAULT]")
    if CATCH_ALL not in parsed.sections:
        problems.add(CATCH_ALL, None, "section missing: it is the catch-all destination")
        return None
    for name in parsed.sections:
        for sub in parsed[name].sections:
            problems.add(name, None, f"nested section [[{sub}]] is not supported")
        for key in parsed[name].scalars:
            if setting_of(key) is None:
                problems.add(name, key, settings.unknown_key_problem(key))

    defaults = parsed[CATCH_ALL]
    order = [CATCH_ALL] + [name for name in parsed.sections if name != CATCH_ALL]
    destinations, owners = [], {}
    for name in order:
        section = _Section(name, parsed[name], None if name == CATCH_ALL else defaults,
                           problems)
        recipients = _recipients(section)
        for address in recipients:
            if address in owners:
                section.problem("recipient", f"{address} is already routed by [{owners[address]}]")
            owners.setdefault(address, name)
        account = _account(section)
        queue = _queue(section, account)
        webhook_keys = _webhook(section, queue)
        destinations.append(Destination(
            section=name,
            recipients=recipients,
            container=_container(section),
            account=account,
            container_shards=_container_shards(section),
            create_container=section.boolean("create_container"),
            queue=queue,
            reject_verdicts=_reject_verdicts(section),
            retention=section.duration("retention"),
            webhook=webhook_keys if webhook_keys.url else None,
            webhook_keys=webhook_keys,
        ))
    _same_per_copy(destinations, problems)
    _no_container_is_another_s_shard(destinations, problems)
    return Config(path=path, destinations=tuple(destinations))


# What sections that store into one container must agree on: a message for
# both is one copy, and this is what that copy has.
ONE_PER_COPY = {"retention": "with one expiry",
                "container_shards": "in one of the same shard containers"}


def _same_per_copy(destinations, problems):
    """Sections that store into one container share each message's one copy: ONE_PER_COPY.

    A section of fewer shards would never find the copies in the others; a
    second expiry cannot be given to the same copy.
    """
    told = {(error.section, error.key) for error in problems.found}
    for key, copy_has in ONE_PER_COPY.items():
        first = {}
        for destination in destinations:
            if (destination.section, key) in told:  # its value is wrong already
                continue
            other = first.setdefault(destination.target, destination)
            if getattr(other, key) != getattr(destination, key):
                problems.add(destination.section, key,
                             f"differs from [{other.section}]'s, which stores into the same "
                             f"container {destination.container!r}: a message for both is "
                             f"one copy, {copy_has}")


def _no_container_is_another_s_shard(destinations, problems):
    """Shard k of container "mail" is "mail-k": no other destination may store there too.

    Their messages would mix, and each one's queue would take the other's.
    """
    owners = {}
    for destination in destinations:
        for name in shard_names(destination.container, destination.container_shards):
            other = owners.setdefault((destination.account, name), destination)
            if other.target != destination.target:
                problems.add(destination.section, "container",
                             f"{name!r} is a container of [{other.section}] too (its "
                             f"{other.container!r} with container_shards = "
                             f"{other.container_shards}): their messages would mix")
                break


class _Section:
    """A section's values with [DEFAULT] inheritance, read by the settings table.

    A bad value is noted as a problem and read as its default, so that the
    rest of the file is checked too.
    """

    def __init__(self, name, values, defaults, problems):
        self.name, self.values, self.defaults, self.problems = name, values, defaults, problems

    def problem(self, key, text):
        self.problems.add(self.name, key, text)

    def value_problem(self, key, text):
        """A problem of the value itself: told once, where it is written ([DEFAULT]'s, there)."""
        self.combination_problem((key,), key, text)

    def combination_problem(self, keys, key, text):
        """A problem of `keys` together: not told again where all of them are inherited."""
        if self.defaults is None or any(name in self.values for name in keys):
            self.problem(key, text)

    def given(self, key):
        """Whether this section, or [DEFAULT] for it, sets `key` to something."""
        return self.raw(key) is not None

    def raw(self, key, inherit=True):
        if key in self.values:
            value = self.values[key]
        elif inherit and self.defaults is not None:
            value = self.defaults.get(key)
        else:
            value = None
        if isinstance(value, list) and key not in LIST_KEYS:
            self.value_problem(key, "must be a single value; quote it if it contains a comma")
            return None
        setting = setting_of(key)
        if isinstance(value, str) and not (setting and setting.secret):
            value = value.strip()  # a secret is as quoted: "pass " keeps its space
        return value if value not in ("", None) else None

    def text(self, key):
        value = self.raw(key)
        return BY_NAME[key].default if value is None else value

    def required(self, key):
        value = self.raw(key)
        if value is None:
            self.value_problem(key, "is required")
            return ""
        return value

    def boolean(self, key):
        value = self.raw(key)
        if value is None:
            return BY_NAME[key].default
        if value.lower() not in BOOLEANS:
            self.value_problem(key, f"{value!r} is not a boolean (true/false)")
            return BY_NAME[key].default
        return BOOLEANS[value.lower()]

    def number(self, key):
        setting, value = BY_NAME[key], self.raw(key)
        if value is None:
            return setting.default
        try:
            number = float(value)
            if setting.kind == settings.INTEGER:
                number = int(value)
        except ValueError:
            whole = " whole" if setting.kind == settings.INTEGER and _is_float(value) else ""
            self.value_problem(key, f"{value!r} is not a{whole} number")
            return setting.default
        if not math.isfinite(number):  # nan, inf, 1e400: every socket timeout would fail
            self.value_problem(key, f"{value!r} is not a finite number")
            return setting.default
        if number < setting.minimum:
            unit = f" {setting.unit}" if setting.unit else ""
            self.value_problem(key, f"must be at least {setting.minimum:g}{unit}")
            return setting.default
        return number

    def duration(self, key):
        """Seconds, from 90d / 12h / 30m / 45s or a number of seconds; None when unset."""
        setting, value = BY_NAME[key], self.raw(key)
        if value is None:
            return setting.default
        seconds = settings.duration_seconds(value)
        if seconds is None:
            self.value_problem(key, f"{value!r} is not a duration like 90d, 12h, 30m, 45s "
                               "or a number of seconds")
            return setting.default
        if seconds < setting.minimum:
            self.value_problem(key, f"must be at least {setting.minimum:g} s")
            return setting.default
        return seconds

    def choice(self, key, aliases=()):
        setting, value = BY_NAME[key], self.raw(key)
        if value is None:
            return setting.default
        if value not in setting.choices and value not in aliases:
            self.value_problem(key, f"{value!r} is not one of {', '.join(setting.choices)}")
            return setting.default
        return value

    def file(self, key):
        value = self.raw(key)
        if value is not None and not os.path.isfile(value):
            self.value_problem(key, f"{value!r} is not a file")
        return value

    def os_options(self):
        names = {key for key in self.values.scalars if key.startswith(OS_OPTIONS_PREFIX)}
        if self.defaults is not None:
            names |= {key for key in self.defaults.scalars if key.startswith(OS_OPTIONS_PREFIX)}
        options = {}
        for key in sorted(names):
            value = self.raw(key)
            if value is not None and key[len(OS_OPTIONS_PREFIX):] in OS_OPTIONS:
                options[key[len(OS_OPTIONS_PREFIX):]] = value
        return tuple(sorted(options.items()))


def _is_float(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _recipients(section):
    value = section.raw("recipient", inherit=False)
    addresses = value if isinstance(value, list) else [] if value is None else [value]
    addresses = [address.strip() for address in addresses if address.strip()]
    if section.name == CATCH_ALL:
        if addresses not in ([], [CATCH_ALL]):
            section.problem("recipient", "must be DEFAULT or empty in the catch-all section")
        return ()
    if not addresses:
        section.problem("recipient", "is required: which addresses go to this section?")
    wrong = [address for address in addresses if not ADDRESS.match(address)]
    for address in wrong:
        section.problem("recipient", f"{address!r} is not a full address (local@domain)")
    return tuple(dict.fromkeys(address.casefold() for address in addresses
                               if address not in wrong))


def _reject_verdicts(section):
    """reject_verdicts: which verdicts this destination refuses; inherited from [DEFAULT]."""
    value = section.raw("reject_verdicts")
    names = value if isinstance(value, list) else [] if value is None else [value]
    names = [name.strip().lower() for name in names if name.strip()]
    known = BY_NAME["reject_verdicts"].choices
    for name in names:
        if name not in known:
            section.value_problem("reject_verdicts", f"{name!r} is not one of " + ", ".join(known))
    return tuple(dict.fromkeys(name for name in names if name in known))


def _container(section):
    container = section.required("container")
    if "/" in container or len(container.encode()) > 256:
        section.value_problem("container", f"{container!r} is not a valid container name")
    return container


def _container_shards(section):
    """container_shards; shard k's name (``<container>-<k>``) must be a container name too."""
    shards = section.number("container_shards")
    container = section.raw("container") or ""
    if shards > 1 and len(f"{container}-{shards - 1}".encode()) > 256:
        section.combination_problem(("container", "container_shards"), "container_shards",
                                    f"{container!r} with the shard suffix -{shards - 1} is "
                                    "longer than Swift's 256 bytes")
    return shards


def _queue(section, account):
    lock, index = section.choice("queue_lock"), section.choice("queue_index")
    redis_url = section.raw("queue_redis_url")
    for key, value, needs in (("queue_lock", lock, "redis"),
                              ("queue_index", index, "redis-stream")):
        if value == needs and not (redis_url or "").startswith(REDIS_SCHEMES):
            section.combination_problem(
                (key, "queue_redis_url"), "queue_redis_url",
                f"is required (redis://host:port/db) with {key} = {needs}")
    retry_delay = section.number("queue_retry_delay")
    retry_longest = section.number("queue_retry_longest")
    if retry_longest < retry_delay:
        section.combination_problem(("queue_retry_delay", "queue_retry_longest"),
                                    "queue_retry_longest", f"{retry_longest:g} s is shorter than "
                        f"queue_retry_delay ({retry_delay:g} s), the first delay")
    return QueueSettings(
        index=index,
        lock=lock,
        redis_url=redis_url,
        lease=_lease(section, account),
        max_attempts=section.number("queue_max_attempts"),
        retry_delay=retry_delay,
        retry_longest=retry_longest,
        command_timeout=section.number("queue_command_timeout"),
        dedup_window=section.number("queue_dedup_window"),
    )


def _webhook(section, queue):
    """The webhook_* keys; a webhook_url needs its webhook_secret: no unsigned POSTs."""
    url, secret = section.raw("webhook_url") or "", section.raw("webhook_secret") or ""
    insecure = section.boolean("webhook_insecure")
    if url:
        problem = webhook_url_problem(url, insecure)
        if problem:
            section.combination_problem(("webhook_url", "webhook_insecure"), "webhook_url",
                                        problem)
        if not secret:
            section.combination_problem(
                ("webhook_url", "webhook_secret"), "webhook_secret",
                "is required with webhook_url: every POST is signed with it")
    timeout = section.number("webhook_timeout")
    if url or section.given("webhook_timeout"):
        problem = webhook_timeout_problem(timeout, queue.lease)
        if problem:
            section.combination_problem(
                ("webhook_timeout", "queue_lease", "timeout", "retries"), "webhook_timeout",
                problem)
    return WebhookSettings(
        url=url, secret=secret, format=section.choice("webhook_format"), timeout=timeout,
        insecure=insecure, cacert=section.file("webhook_cacert"),
        inline_limit=section.number("webhook_inline_limit"),
        link_lifetime=section.number("webhook_link_lifetime"),
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


def _lease(section, account):
    """queue_lease: long enough for one whole Swift request of this account (swiftdrop.lease).

    A lease set in the ini that is shorter is an error; the default grows to fit.
    """
    shortest = shortest_lease(account.timeout, account.retries)
    if not section.given("queue_lease"):
        return max(BY_NAME["queue_lease"].default, shortest)
    lease = section.number("queue_lease")
    if lease < shortest:
        longest = longest_request(account.timeout, account.retries)
        attempts = account.retries + 1
        section.combination_problem(("queue_lease", "timeout", "retries"), "queue_lease", (
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
    if authurl and not authurl.startswith(("http://", "https://")):
        section.value_problem("authurl", f"{authurl!r} is not an http(s) URL")
    version = section.choice("auth_version", aliases=AUTH_VERSIONS)
    cacert, insecure = section.file("cacert"), section.boolean("insecure")
    if cacert is not None and insecure:
        section.combination_problem(
            ("cacert", "insecure"), "insecure",
            "true turns off the verification that cacert is for: keep one of the two")
    os_options = section.os_options()
    tenant_name = section.raw("tenant_name")
    project = next((f"os_options_{name}" for name, _ in os_options
                    if name in ("tenant_name", "project_name")), None)
    if tenant_name is not None and project is not None:
        section.combination_problem(
            ("tenant_name", project), "tenant_name",
            f"and {project} both name the project: keep one (in a named section, "
            "tenant_name = drops the inherited one)")
    return Account(
        authurl=authurl,
        user=section.required("user"),
        key=section.required("key"),
        auth_version=AUTH_VERSIONS[version],
        tenant_name=tenant_name,
        os_options=os_options,
        cacert=cacert,
        insecure=insecure,
        timeout=section.number("timeout"),
        retries=section.number("retries"),
    )
