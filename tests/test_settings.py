"""The one description of the ini's keys (swiftdrop.settings) against the other three.

The role's argument specs, its ini template, import-env and the docs each
say what a key is; these tests fail when one of them says something else
than the table the loader validates with.
"""

import re

import pytest
import yaml

from swiftdrop import config, migrate, settings, verdicts
from swiftdrop.settings import SETTINGS
from tests.support.role import REPO, rendered

SPECS = yaml.safe_load((REPO / "roles/swiftdrop/meta/argument_specs.yml").read_text())
DESTINATION = SPECS["argument_specs"]["main"]["options"]["swiftdrop_destinations"]["options"]
# Role options that are not ini keys: the section's name, the CA as PEM text, the
# webhook unit's own settings.
ROLE_ONLY = {"name", "cacert_pem", "os_options", "webhook", "webhook.workers",
             "webhook.metrics_listen"}
SPEC_TYPES = {settings.TEXT: {"str"}, settings.SECRET: {"str"}, settings.URL: {"str"},
              settings.PATH: {"path", "str"}, settings.BOOLEAN: {"bool"},
              settings.NUMBER: {"float", "int"}, settings.INTEGER: {"int"},
              settings.CHOICE: {"str"}, settings.LIST: {"list"},
              settings.DURATION: {"str"}}
ROLE_SETTINGS = [setting for setting in SETTINGS if setting.role]


def role_option(path):
    """The argument spec of a swiftdrop_destinations item's `path` (``webhook.url``)."""
    options, spec = DESTINATION, None
    for part in path.split("."):
        spec = options[part]
        options = spec.get("options", {})
    return spec


def role_options(options=DESTINATION, prefix=""):
    for name, spec in options.items():
        yield prefix + name
        yield from role_options(spec.get("options", {}), f"{prefix}{name}.")


@pytest.mark.parametrize("setting", ROLE_SETTINGS, ids=lambda setting: setting.name)
def test_the_role_s_argument_spec_says_what_the_table_says(setting):
    spec = role_option(setting.role)
    assert spec["type"] in SPEC_TYPES[setting.kind]
    if setting.kind == settings.CHOICE:
        assert tuple(spec["choices"]) == setting.choices
    if setting.name == "reject_verdicts":
        assert tuple(spec["choices"]) == setting.choices
    if "default" in spec and setting.default is not None:
        assert spec["default"] == setting.default
    assert spec.get("no_log", False) == setting.secret, "a secret is no_log in the role"


def test_every_option_of_a_destination_in_the_role_is_an_ini_key_or_the_role_s_own():
    keys = {setting.role for setting in ROLE_SETTINGS} | ROLE_ONLY
    assert set(role_options()) - keys == set()


def test_the_verdicts_a_destination_may_refuse_are_the_ones_the_filter_knows():
    assert set(verdicts.REFUSABLE) == set(settings.REFUSABLE_VERDICTS)


def test_import_env_knows_every_key_and_its_type():
    assert set(migrate.OPTIONS) == {*config.SCALAR_KEYS, *config.LIST_KEYS,
                                    *(f"os_options_{name}" for name in settings.OS_OPTIONS)}
    for setting in SETTINGS:
        if setting.kind == settings.BOOLEAN:
            assert migrate._typed(setting.name, "yes") is True
        elif setting.kind in (settings.NUMBER, settings.INTEGER):
            assert migrate._typed(setting.name, "7") == 7


DOCS = {path: path.read_text() for path in (REPO / "docs").glob("*.md")
        if path.name in ("configuration.md", "queue.md", "webhooks.md")}


def documented_rows(name):
    """The table rows of the docs whose first cell names `name`."""
    return [line for text in DOCS.values() for line in text.splitlines()
            if line.startswith("| ") and f"`{name}`" in line.split(" | ")[0]]


def shown(default):
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, (int, float)):
        return f"`{default:g}`"
    return f"`{default}`"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.name)
def test_the_docs_give_every_key_with_its_default(setting):
    rows = documented_rows(setting.name)
    assert rows, f"{setting.name} is in no key table of configuration, queue or webhooks.md"
    if setting.default is not None:
        assert any(shown(setting.default) in row.rsplit(" | ", 1)[1] for row in rows), rows


def test_the_role_s_ini_template_renders_every_key_the_way_the_loader_reads_it(tmp_path):
    """Every key with a role variable, set to a value other than its default, comes back."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not read: the loader only checks that the file is there\n")
    chosen = {
        "container": "mail", "auth_version": "3", "authurl": "https://swift.example.test/v3",
        "user": "u", "key": "k #{ not a comment, not a template }", "tenant_name": "t",
        "cacert": str(ca), "timeout": 7.5, "retries": 4, "container_shards": 3,
        "create_container": True, "reject_verdicts": ["spf-fail", "dkim-fail"],
        "retention": "90d",
        "queue_index": "redis-stream", "queue_lock": "redis",
        "queue_redis_url": "redis://127.0.0.1:6379/3", "queue_lease": 700,
        "queue_max_attempts": 9, "queue_retry_delay": 5, "queue_retry_longest": 50,
        "queue_command_timeout": 60, "queue_dedup_window": 600,
        "webhook": {"url": "https://hooks.example.test/in", "secret": "s,#'\"",
                    "format": "raw", "timeout": 12, "insecure": True, "inline_limit": 1000,
                    "link_lifetime": 3600, "tempurl_key": "tk"},
    }
    # insecure = true is refused beside a cacert: P drops the inherited one
    named = {"name": "P", "recipients": ["p@example.com", "q@example.com"],
             "container": "p-mail", "cacert": "", "insecure": True}
    ini = tmp_path / "swiftdrop.ini"
    ini.write_text(rendered(tmp_path, "swiftdrop.ini",
                            swiftdrop_destinations=[{"name": "DEFAULT", **chosen}, named]))
    default, production = config.load(str(ini)).destinations
    read = {**vars(default.account), **vars(default.queue), "container": default.container,
            "container_shards": default.container_shards,
            "create_container": default.create_container,
            "reject_verdicts": list(default.reject_verdicts), "retention": default.retention}
    for setting in ROLE_SETTINGS:
        if setting.role.startswith("webhook."):
            field = setting.role.split(".", 1)[1]
            if field == "cacert":  # PEM text in the role, which installs it as the file named
                continue
            assert getattr(default.webhook, field) == chosen["webhook"][field], setting.name
        elif setting.name == "insecure":
            assert production.account.insecure is True
        elif setting.name == "recipient":
            assert production.recipients == tuple(named["recipients"])
        else:
            expected = chosen[setting.name]
            if setting.kind == settings.DURATION:
                expected = settings.duration_seconds(expected)
            assert read[setting.name.removeprefix("queue_")] == expected, setting.name
            assert expected != setting.default, f"{setting.name}: choose a non-default value"
    assert production.container == "p-mail" and production.account.cacert is None


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.kind in (settings.NUMBER,
                                                                      settings.INTEGER)],
                         ids=lambda setting: setting.name)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "-1", "x", "0x10", ""])
def test_no_number_outside_a_key_s_range_is_taken(tmp_path, setting, value):
    """Each number key, with values an operator may type: refused, or in the range."""
    ini = tmp_path / "swiftdrop.ini"
    ini.write_text("[DEFAULT]\nrecipient = DEFAULT\ncontainer = c\nauthurl = http://127.0.0.1/\n"
                   f"user = u\nkey = k\n{setting.name} = {value}\n")
    try:
        [destination] = config.load(str(ini)).destinations
    except config.ConfigError as error:
        assert [(p.section, p.key) for p in error.problems] == [("DEFAULT", setting.name)]
        return
    taken = {**vars(destination.account), **vars(destination.queue),
             **{f"webhook_{k}": v for k, v in vars(destination.webhook_keys).items()},
             "container_shards": destination.container_shards}
    number = taken.get(setting.name, taken.get(setting.name.removeprefix("queue_")))
    assert number == setting.default or number >= setting.minimum
    assert re.fullmatch(r"[0-9.e+-]*", value) or value == "", "garbage was taken"


MINIMAL = {"container": "c", "authurl": "http://127.0.0.1/auth/v1.0", "user": "u", "key": "k"}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.name)
def test_the_keys_the_table_calls_required_are_the_ones_the_loader_asks_for(tmp_path, setting):
    given = {name: value for name, value in MINIMAL.items() if name != setting.name}
    ini = tmp_path / "swiftdrop.ini"
    ini.write_text("[DEFAULT]\nrecipient = DEFAULT\n"
                   + "".join(f"{name} = {value}\n" for name, value in given.items()))
    try:
        config.load(str(ini))
    except config.ConfigError as error:
        assert setting.required
        assert [(p.key, p.problem) for p in error.problems] == [(setting.name, "is required")]
    else:
        assert not setting.required


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.kind == settings.TEXT],
                         ids=lambda setting: setting.name)
def test_a_named_section_inherits_what_the_table_says_it_inherits(tmp_path, setting):
    ini = tmp_path / "swiftdrop.ini"
    ini.write_text("[DEFAULT]\nrecipient = DEFAULT\n"
                   + "".join(f"{name} = {value}\n" for name, value in MINIMAL.items()
                             if name != setting.name)
                   + f"{setting.name} = from-default\n[P]\nrecipient = p@example.com\n")
    _, named = config.load(str(ini)).destinations
    read = {"container": named.container, "user": named.account.user,
            "tenant_name": named.account.tenant_name}
    assert (read[setting.name] == "from-default") == setting.inherited
