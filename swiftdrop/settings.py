"""Every key of ``/etc/swiftdrop.ini``, once: name, type, unit, range, default, role variable.

The loader (swiftdrop.config) validates against this table; the role's
``meta/argument_specs.yml``, ``import-env`` and the docs are checked against
it by tests/test_settings.py, so the descriptions cannot drift apart. It
imports nothing of the package: ``swiftdrop --help`` and ``check
--config-only`` load it without the filter's modules.
"""

from dataclasses import dataclass
import difflib
import math

# Types of value: how the loader reads the text and what the role's spec must say.
TEXT, SECRET, URL, PATH = "text", "secret", "url", "path"
BOOLEAN, NUMBER, INTEGER, CHOICE, LIST = "boolean", "number", "integer", "choice", "list"
DURATION = "duration"  # 90d, 12h, 30m, 45s or seconds; read as seconds

DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}

# The verdicts a destination may refuse with 550; swiftdrop.verdicts says what each means.
REFUSABLE_VERDICTS = ("spam-reject", "spam-soft-reject", "spf-fail", "dkim-fail",
                      "dmarc-reject", "dmarc-quarantine", "virus")

# os_options that swiftclient's get_auth() understands; anything else is a typo
# that swiftclient would silently ignore.
OS_OPTIONS = frozenset({
    "tenant_id", "tenant_name", "project_id", "project_name",
    "user_id", "user_domain_id", "user_domain_name",
    "project_domain_id", "project_domain_name",
    "service_type", "endpoint_type", "interface", "region_name",
    "auth_type", "application_credential_id", "application_credential_secret",
    "object_storage_url",
})
OS_OPTIONS_PREFIX = "os_options_"


@dataclass(frozen=True)
class Setting:
    """One ini key. `role` is its key in a ``swiftdrop_destinations`` item ("" for none)."""

    name: str
    kind: str
    help: str
    default: object = None  # None: unset unless given (or required)
    minimum: float | None = None
    unit: str = ""
    choices: tuple = ()
    role: str = ""
    required: bool = False
    inherited: bool = True  # named sections take it from [DEFAULT]
    reader: str = "filter"  # filter, queue (swiftdrop queue) or webhook (the webhook worker)

    @property
    def secret(self):
        """Never shown: not in an error, a log line or a repr."""
        return self.kind == SECRET


SETTINGS = (
    Setting("recipient", LIST, "addresses routed to this section; DEFAULT or empty in [DEFAULT]",
            role="recipients", inherited=False),
    Setting("container", TEXT, "the container the messages are stored in", role="container",
            required=True),
    Setting("auth_version", CHOICE, "Swift/Keystone authentication version", default="1",
            choices=("1", "2", "3"), role="auth_version"),
    Setting("authurl", URL, "authentication URL (tempauth or Keystone)", role="authurl",
            required=True),
    Setting("user", TEXT, "the account's user name", role="user", required=True),
    Setting("key", SECRET, "the user's password or key", role="key", required=True),
    Setting("tenant_name", TEXT, "Keystone v2 tenant", role="tenant_name"),
    Setting("cacert", PATH, "CA bundle for Swift's and Keystone's TLS certificates",
            role="cacert"),
    Setting("insecure", BOOLEAN, "skip TLS verification (tests only)", default=False,
            role="insecure"),
    Setting("timeout", NUMBER, "seconds per HTTP attempt to Swift", default=10.0, minimum=0.1,
            unit="s", role="timeout"),
    Setting("retries", INTEGER, "extra attempts after a failed one", default=2, minimum=0,
            role="retries"),
    Setting("container_shards", INTEGER, "containers the messages are spread over, by a hash "
            "of their names; raise it, never lower it", default=1, minimum=1,
            role="container_shards"),
    Setting("create_container", BOOLEAN, "swiftdrop check creates a missing container",
            default=False, role="create_container"),
    Setting("reject_verdicts", LIST, "verdicts refused with 550 instead of stored",
            choices=REFUSABLE_VERDICTS, role="reject_verdicts"),
    Setting("retention", DURATION, "age at which Swift's object-expirer deletes a stored "
            "message, whatever its state; unset: kept until purged", minimum=1, unit="s",
            role="retention"),
    Setting("queue_index", CHOICE, "how consumers find the messages", default="listing",
            choices=("listing", "redis-stream"), role="queue_index", reader="queue"),
    Setting("queue_lock", CHOICE, "where a claim's lock lives", default="swift",
            choices=("swift", "redis"), role="queue_lock", reader="queue"),
    Setting("queue_redis_url", SECRET, "redis://, rediss:// or unix:// URL of the lock or "
            "stream Redis (may hold a password)", role="queue_redis_url", reader="queue"),
    Setting("queue_lease", NUMBER, "seconds a claim is held without a heartbeat", default=300.0,
            minimum=1, unit="s", role="queue_lease", reader="queue"),
    Setting("queue_max_attempts", INTEGER, "attempts before a message goes to failed/",
            default=30, minimum=1, role="queue_max_attempts", reader="queue"),
    Setting("queue_retry_delay", NUMBER, "first retry's delay, doubled each attempt",
            default=60.0, minimum=0, unit="s", role="queue_retry_delay", reader="queue"),
    Setting("queue_retry_longest", NUMBER, "the longest delay between attempts",
            default=3600.0, minimum=0, unit="s", role="queue_retry_longest", reader="queue"),
    Setting("queue_command_timeout", NUMBER, "what one run of a worker's command may take; "
            "0: no limit", default=900.0, minimum=0, unit="s", role="queue_command_timeout",
            reader="queue"),
    Setting("queue_dedup_window", NUMBER, "how long a --dedup marker is kept",
            default=86400.0, minimum=0, unit="s", role="queue_dedup_window", reader="queue"),
    Setting("webhook_url", URL, "where the webhook worker POSTs each message",
            role="webhook.url", reader="webhook"),
    Setting("webhook_secret", SECRET, "signs every POST (HMAC-SHA256)", role="webhook.secret",
            reader="webhook"),
    Setting("webhook_format", CHOICE, "the POST's body", default="json",
            choices=("json", "raw"), role="webhook.format", reader="webhook"),
    Setting("webhook_timeout", NUMBER, "seconds one POST may take", default=30.0, minimum=0.1,
            unit="s", role="webhook.timeout", reader="webhook"),
    Setting("webhook_insecure", BOOLEAN, "skip the receiver's TLS verification, or allow "
            "plain http to another host", default=False, role="webhook.insecure",
            reader="webhook"),
    Setting("webhook_cacert", PATH, "CA bundle for the receiver's certificate",
            role="webhook.cacert", reader="webhook"),
    Setting("webhook_inline_limit", INTEGER, "attachments larger than this are linked",
            default=262144, minimum=0, unit="bytes", role="webhook.inline_limit",
            reader="webhook"),
    Setting("webhook_link_lifetime", NUMBER, "how long a TempURL link works",
            default=604800.0, minimum=1, unit="s", role="webhook.link_lifetime",
            reader="webhook"),
    Setting("webhook_tempurl_key", SECRET, "the account's TempURL key, for the links",
            role="webhook.tempurl_key", reader="webhook"),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}


def duration_seconds(text):
    """Seconds from 90d / 12h / 30m / 45s / 3600, or None when `text` is no finite duration."""
    factor = DURATION_UNITS.get(text[-1:], 1)
    try:
        seconds = float(text[:-1] if text[-1:] in DURATION_UNITS else text) * factor
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) else None


def setting_of(key):
    """The Setting of `key`; an ``os_options_<name>`` key is a secret-or-text of its own."""
    if key in BY_NAME:
        return BY_NAME[key]
    if key.startswith(OS_OPTIONS_PREFIX) and key[len(OS_OPTIONS_PREFIX):] in OS_OPTIONS:
        option = key[len(OS_OPTIONS_PREFIX):]
        return Setting(key, SECRET if option.endswith("secret") else TEXT,
                       "passed to swiftclient in os_options", role=f"os_options.{option}")
    return None


def unknown_key_problem(key):
    """What to tell about a key no setting has, with the nearest known name."""
    if key.startswith(OS_OPTIONS_PREFIX):
        option = key[len(OS_OPTIONS_PREFIX):]
        near = difflib.get_close_matches(option, OS_OPTIONS, n=1)
        hint = (f"did you mean {OS_OPTIONS_PREFIX}{near[0]}?" if near
                else "known: " + ", ".join(sorted(OS_OPTIONS)))
        return f"unknown os_options name {option!r}; {hint}"
    names = [*BY_NAME, *(OS_OPTIONS_PREFIX + option for option in OS_OPTIONS)]
    near = difflib.get_close_matches(key, names, n=1)
    return "unknown key" + (f"; did you mean {near[0]}?" if near else "")
