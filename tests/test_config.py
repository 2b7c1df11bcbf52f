import textwrap

import pytest

from swiftdrop.config import ConfigError, load, webhook_override

BASE = """
[DEFAULT]
recipient = DEFAULT
container = fallback
authurl = http://127.0.0.1:8080/auth/v1.0
user = test:tester
key = testing
"""


def write(tmp_path, text):
    path = tmp_path / "swiftdrop.ini"
    path.write_text(textwrap.dedent(text))
    return str(path)


def error_for(tmp_path, text):
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text))
    return caught.value


def test_named_sections_inherit_default_and_blank_values_drop_keys(tmp_path):
    config = load(write(tmp_path, BASE + """
        tenant_name = inherited
        [PRODUCTION]
        recipient = Swiftdrop@example.com, other@example.com
        container = production
        tenant_name =
        timeout = 5
    """))
    default, production = config.destinations
    assert default.section == "DEFAULT" and default.recipients == ()
    assert production.recipients == ("swiftdrop@example.com", "other@example.com")
    assert production.container == "production"
    assert production.account.user == "test:tester"
    assert production.account.tenant_name is None
    assert production.account.timeout == 5.0
    assert default.account.tenant_name == "inherited"


def test_keystone_v3_options_become_os_options(tmp_path):
    config = load(write(tmp_path, BASE + """
        auth_version = 3
        os_options_project_name = project
        os_options_user_domain_name = Default
        [OTHER]
        recipient = a@b.example
        os_options_project_name = other
    """))
    default, other = config.destinations
    assert default.account.auth_version == "3"
    assert dict(default.account.os_options) == {"project_name": "project",
                                                "user_domain_name": "Default"}
    assert dict(other.account.os_options) == {"project_name": "other",
                                              "user_domain_name": "Default"}


def test_sections_with_equal_settings_share_one_account(tmp_path):
    config = load(write(tmp_path, BASE + "[A]\nrecipient = a@x.example\ncontainer = a\n"))
    assert config.destinations[0].account == config.destinations[1].account
    assert config.destinations[0].target != config.destinations[1].target


def test_retention_is_read_as_seconds_and_inherited(tmp_path):
    config = load(write(tmp_path, BASE + """
        retention = 90d
        [SHORT]
        recipient = a@x.example
        container = short
        retention = 12h
        [KEPT]
        recipient = b@x.example
        container = kept
        retention = ""
        [SECONDS]
        recipient = c@x.example
        container = seconds
        retention = 3600
        """))
    assert [destination.retention for destination in config.destinations] == [
        90 * 86400, 12 * 3600, None, 3600]


def test_key_is_not_in_the_repr(tmp_path):
    config = load(write(tmp_path, BASE))
    assert "testing" not in repr(config)
    assert "testing" not in config.catch_all.account.describe()


@pytest.mark.parametrize(("text", "section", "key", "words"), [
    ("[OTHER]\nrecipient = a@b.example\ncontainer = c\n", "DEFAULT", None, "section missing"),
    (BASE + "contianer = typo\n", "DEFAULT", "contianer", "unknown key"),
    (BASE + "os_options_project = p\n", "DEFAULT", "os_options_project", "unknown os_options"),
    (BASE.replace("container = fallback\n", ""), "DEFAULT", "container", "required"),
    (BASE + "auth_version = 4\n", "DEFAULT", "auth_version", "not one of"),
    (BASE + "timeout = soon\n", "DEFAULT", "timeout", "not a number"),
    (BASE + "retries = -1\n", "DEFAULT", "retries", "at least 0"),
    (BASE + "insecure = maybe\n", "DEFAULT", "insecure", "not a boolean"),
    (BASE + "[P]\ncontainer = p\n", "P", "recipient", "required"),
    (BASE + "[P]\nrecipient = nobody\n", "P", "recipient", "not a full address"),
    (BASE + "[P]\nrecipient = a@x.example\n[Q]\nrecipient = A@X.example\n", "Q", "recipient",
     "already routed by [P]"),
    (BASE.replace("recipient = DEFAULT", "recipient = a@x.example"), "DEFAULT", "recipient",
     "catch-all"),
    (BASE.replace("key = testing", "key = abc,def"), "DEFAULT", "key", "quote it"),
    (BASE.replace("authurl = http", "authurl = ftp"), "DEFAULT", "authurl", "http(s) URL"),
    (BASE + "cacert = /nonexistent/ca.pem\n", "DEFAULT", "cacert", "not a file"),
    (BASE + "[P]\nrecipient = a@x.example\ncontainer = a/b\n", "P", "container", "not a valid"),
    # one request may take 3 s * 2 + 1 s of back-off; the lock needs 2.5 s more
    (BASE + "timeout = 3\nretries = 1\nqueue_lease = 9\n", "DEFAULT", "queue_lease",
     "9 s is too short: make it at least 10, or lower timeout or retries. One Swift request "
     "may take 7 s here"),
    (BASE + "queue_lease = 40\n[P]\nrecipient = a@x.example\ntimeout = 20\n", "P",
     "queue_lease", "at least 66"),
    (BASE + "queue_command_timeout = -1\n", "DEFAULT", "queue_command_timeout",
     "must be at least 0"),
    (BASE + "queue_retry_longest = soon\n", "DEFAULT", "queue_retry_longest", "not a number"),
    (BASE + "timeout = nan\n", "DEFAULT", "timeout", "'nan' is not a finite number"),
    (BASE + "[P]\nrecipient = a@x.example\ntimeout = inf\n", "P", "timeout", "not a finite"),
    (BASE + "queue_lease = 1e400\n", "DEFAULT", "queue_lease", "not a finite number"),
    (BASE + "retries = 2.5\n", "DEFAULT", "retries", "'2.5' is not a whole number"),
    (BASE + "contianer = typo\n", "DEFAULT", "contianer", "did you mean container?"),
    (BASE + "queue_leese = 600\n", "DEFAULT", "queue_leese", "did you mean queue_lease?"),
    (BASE + "os_options_project_nam = p\n", "DEFAULT", "os_options_project_nam",
     "did you mean os_options_project_name?"),
    (BASE.replace("container = fallback", "container = mail#2026"), "DEFAULT", "container",
     "an unquoted # ends 'mail' here"),
    (BASE + "cacert = /etc/hostname\ninsecure = true\n", "DEFAULT", "insecure",
     "keep one of the two"),
    (BASE + "tenant_name = a\n[P]\nrecipient = a@x.example\nos_options_project_name = b\n",
     "P", "tenant_name", "and os_options_project_name both name the project"),
    (BASE + "queue_retry_delay = 600\nqueue_retry_longest = 60\n", "DEFAULT",
     "queue_retry_longest", "shorter than queue_retry_delay"),
    (BASE + "retention = 90 days\n", "DEFAULT", "retention", "not a duration like 90d"),
    (BASE + "retention = infd\n", "DEFAULT", "retention", "not a duration"),
    (BASE + "retention = 0.5\n", "DEFAULT", "retention", "must be at least 1 s"),
    (BASE + "container_shards = 3\n[P]\nrecipient = a@x.example\ncontainer = fallback-2\n"
     "container_shards = 1\n", "P", "container", "'fallback-2' is a container of [DEFAULT] too "
     "(its 'fallback' with container_shards = 3): their messages would mix"),
    (BASE + "retention = 30d\n[P]\nrecipient = a@x.example\ncontainer = fallback\n"
     "retention = 90d\n", "P", "retention", "differs from [DEFAULT]'s, which stores into the "
     "same container 'fallback'"),
])
def test_bad_config_names_file_section_and_key(tmp_path, text, section, key, words):
    error = error_for(tmp_path, text)
    assert (error.section, error.key) == (section, key)
    assert str(error).startswith(str(tmp_path / "swiftdrop.ini") + ": ")
    assert f"[{section}]" in str(error)
    assert words in str(error)
    if key:
        assert f"] {key}: " in str(error)


def test_an_unquoted_hash_that_would_cut_a_secret_is_refused_without_showing_it(tmp_path):
    error = error_for(tmp_path, BASE.replace("key = testing", "key = pass#word"))
    assert (error.section, error.key) == ("DEFAULT", "key")
    assert "quote the whole value" in str(error)
    assert "pass" not in str(error).replace("password", "")


def test_a_hash_after_a_space_or_inside_quotes_is_taken_as_configobj_means_it(tmp_path):
    config = load(write(tmp_path, BASE.replace("key = testing", 'key = "pass#word"')
                        + "timeout = 5  # a comment\n"))
    assert config.catch_all.account.key == "pass#word"
    assert config.catch_all.account.timeout == 5


def test_a_quoted_secret_keeps_its_blanks(tmp_path):
    config = load(write(tmp_path, BASE.replace("key = testing", 'key = " pass word "')))
    assert config.catch_all.account.key == " pass word "


def test_every_problem_of_the_file_is_reported_at_once(tmp_path):
    error = error_for(tmp_path, BASE.replace("authurl = http", "authurl = ftp") + """
        timeout = nan
        contianer = typo
        [P]
        recipient = nobody
        queue_lock = zookeeper
    """)
    found = [(problem.section, problem.key) for problem in error.problems]
    # an inherited value's problem is told once, in [DEFAULT]
    assert found == [("DEFAULT", "contianer"), ("DEFAULT", "authurl"), ("DEFAULT", "timeout"),
                     ("P", "recipient"), ("P", "queue_lock")]
    assert str(error).count("\n") == len(found) - 1
    assert all(line.startswith(str(tmp_path / "swiftdrop.ini") + ": [")
               for line in str(error).splitlines())


def test_unreadable_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "missing.ini"))
    with pytest.raises(ConfigError, match=r"swiftdrop\.ini: .*line"):
        load(write(tmp_path, BASE + "[broken\n"))
    with pytest.raises(ConfigError, match="outside any section"):
        load(write(tmp_path, "container = x\n" + BASE))


def test_a_lease_that_holds_one_request_is_taken_and_the_default_grows_to_fit(tmp_path):
    [shortest] = load(write(tmp_path, BASE + "timeout = 3\nretries = 1\nqueue_lease = 10\n"
                            )).destinations
    assert shortest.queue.lease == 10
    # without queue_lease, an account this slow gets a lease that fits its requests
    [slow] = load(write(tmp_path, BASE + "timeout = 120\nretries = 3\n")).destinations
    assert slow.queue.lease == 120 * 4 + (1 + 2 + 4) + 3  # 2.5 s more, rounded up
    [usual] = load(write(tmp_path, BASE)).destinations
    assert usual.queue.lease == 300


def test_the_retry_schedule_and_command_timeout_keys_are_read_per_destination(tmp_path):
    [usual, patient] = load(write(tmp_path, BASE + (
        "[P]\nrecipient = a@x.example\nqueue_retry_longest = 7200\n"
        "queue_command_timeout = 0\nqueue_max_attempts = 40\n"))).destinations
    assert (usual.queue.retry_longest, usual.queue.command_timeout,
            usual.queue.max_attempts) == (3600, 900, 30)
    assert (patient.queue.retry_longest, patient.queue.command_timeout,
            patient.queue.max_attempts) == (7200, 0, 40)


WEBHOOK = BASE + "webhook_url = https://hooks.example.com/mail\nwebhook_secret = s3cret\n"


def test_webhook_keys_are_parsed_inherited_and_keep_their_secrets_out_of_repr(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    catch_all, billing, quiet = load(write(tmp_path, WEBHOOK + f"""
        webhook_format = raw
        webhook_timeout = 5
        webhook_cacert = {ca}
        webhook_inline_limit = 1000
        webhook_link_lifetime = 3600
        webhook_tempurl_key = k3y
        [BILLING]
        recipient = billing@x.example
        webhook_url = http://127.0.0.1:9000/hook
        webhook_format = json
        [QUIET]
        recipient = quiet@x.example
        webhook_url =
        """)).destinations
    hook = catch_all.webhook
    assert (hook.url, hook.secret, hook.format, hook.timeout, hook.cacert, hook.inline_limit,
            hook.link_lifetime, hook.tempurl_key, hook.insecure) == (
        "https://hooks.example.com/mail", "s3cret", "raw", 5, str(ca), 1000, 3600, "k3y", False)
    assert "s3cret" not in repr(catch_all) and "k3y" not in repr(catch_all)
    assert (billing.webhook.url, billing.webhook.format, billing.webhook.secret,
            billing.webhook.timeout) == ("http://127.0.0.1:9000/hook", "json", "s3cret", 5)
    # no URL, no webhook; the other keys still count for `queue run --webhook URL`
    assert quiet.webhook is None
    assert (quiet.webhook_keys.format, quiet.webhook_keys.secret) == ("raw", "s3cret")


def test_webhook_defaults(tmp_path):
    [destination] = load(write(tmp_path, WEBHOOK)).destinations
    hook = destination.webhook
    assert (hook.format, hook.timeout, hook.insecure, hook.cacert, hook.inline_limit,
            hook.link_lifetime, hook.tempurl_key) == ("json", 30, False, None, 262144, 604800,
                                                      None)
    assert load(write(tmp_path, BASE)).catch_all.webhook is None


@pytest.mark.parametrize(("text", "key", "words"), [
    (BASE + "webhook_url = https://hooks.example.com/mail\n", "webhook_secret",
     "is required with webhook_url"),
    (WEBHOOK.replace("https://hooks", "ftp://hooks"), "webhook_url",
     "'ftp://hooks.example.com/mail' is not an http:// or https:// URL"),
    (WEBHOOK.replace("https://hooks.example.com/", "https://:80/"), "webhook_url",
     "not an http:// or https:// URL"),
    (WEBHOOK.replace("hooks.example.com", "hooks.example.com:https"), "webhook_url",
     "no valid port"),
    # plain http leaves the machine only when the operator says so; userinfo and query
    # (a credential, often) never show
    (WEBHOOK.replace("https://hooks.example.com/mail",
                     "http://user:pw@hooks.example.com/mail?token=t0p"), "webhook_url",
     "'http://hooks.example.com/mail' is plain http to another host"),
    (WEBHOOK + "webhook_format = xml\n", "webhook_format", "'xml' is not one of json, raw"),
    (WEBHOOK + "webhook_timeout = soon\n", "webhook_timeout", "not a number"),
    (WEBHOOK + "webhook_timeout = 0\n", "webhook_timeout", "at least 0.1"),
    (WEBHOOK + "webhook_timeout = 300\n", "webhook_timeout",
     "300 s must be shorter than the lease (queue_lease, 300 s here)"),
    (WEBHOOK + "queue_lease = 40\nwebhook_timeout = 45\n", "webhook_timeout",
     "shorter than the lease (queue_lease, 40 s here)"),
    (WEBHOOK + "webhook_insecure = perhaps\n", "webhook_insecure", "not a boolean"),
    (WEBHOOK + "webhook_cacert = /nonexistent/ca.pem\n", "webhook_cacert", "not a file"),
    (WEBHOOK + "webhook_inline_limit = -1\n", "webhook_inline_limit", "at least 0"),
    (WEBHOOK + "webhook_link_lifetime = 0\n", "webhook_link_lifetime", "at least 1"),
    (WEBHOOK + "webhook_link = 1\n", "webhook_link", "unknown key"),
])
def test_bad_webhook_keys_name_file_section_and_key(tmp_path, text, key, words):
    error = error_for(tmp_path, text)
    assert (error.section, error.key) == ("DEFAULT", key)
    assert f"[DEFAULT] {key}: " in str(error)
    assert words in str(error)
    assert "s3cret" not in str(error) and "t0p" not in str(error) and "pw" not in str(error)


def test_plain_http_is_taken_for_loopback_and_when_insecure_is_said(tmp_path):
    for url, extra in [("http://127.0.0.1:8000/h", ""), ("http://[::1]:8000/h", ""),
                       ("http://localhost/h", ""), ("http://127.8.9.1/h", ""),
                       ("http://hooks.example.com/h", "webhook_insecure = true\n")]:
        text = WEBHOOK.replace("https://hooks.example.com/mail", url) + extra
        assert load(write(tmp_path, text)).catch_all.webhook.url == url


def test_a_short_lease_is_fine_until_a_webhook_would_outlast_it(tmp_path):
    short = BASE + "timeout = 3\nretries = 1\nqueue_lease = 10\n"
    [destination] = load(write(tmp_path, short)).destinations
    with pytest.raises(ValueError, match="webhook_timeout: 30 s must be shorter than the lease"):
        webhook_override(destination, "http://127.0.0.1:9/h", secret="s")
    error = error_for(tmp_path, short + "webhook_timeout = 12\n")
    assert error.key == "webhook_timeout"


def test_run_s_webhook_override_takes_the_ini_s_keys_and_the_environment_s_secret(tmp_path):
    [bare] = load(write(tmp_path, BASE + "webhook_format = raw\n")).destinations
    with pytest.raises(ValueError, match="no webhook_url"):
        webhook_override(bare, None)
    with pytest.raises(ValueError, match=r"--webhook needs a secret.*SWIFTDROP_WEBHOOK_SECRET"):
        webhook_override(bare, "http://127.0.0.1:9/h")
    with pytest.raises(ValueError, match="is plain http to another host"):
        webhook_override(bare, "http://hooks.example.com/h", secret="env")
    hook = webhook_override(bare, "http://127.0.0.1:9/h", secret="env")
    assert (hook.url, hook.secret, hook.format) == ("http://127.0.0.1:9/h", "env", "raw")
    [configured] = load(write(tmp_path, WEBHOOK)).destinations
    hook = webhook_override(configured, "https://other.example.com/", secret="env",
                            webhook_format="raw")
    assert (hook.url, hook.secret, hook.format) == ("https://other.example.com/", "s3cret", "raw")
    assert webhook_override(configured, None) == configured.webhook
