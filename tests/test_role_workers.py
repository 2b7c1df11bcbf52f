"""The role's worker and webhook units as Ansible renders them, and validate.yml's checks.

Run by Ansible itself on the controller (tests/support/role.py): nothing on
this machine is changed. The deployed units are verified in Molecule
(molecule/consumer/verify.yml): a vaulted variable reaching the command, its
cache directory writable, a crash retried, a webhook's POST signed and verified.
"""

import json
import re

import yaml

from swiftdrop import config
from tests.support.role import ROLE, VARIABLES, rendered, validate

WORKER = {"name": "import", "command": ["node", "/srv/import.js"]}
SECRET = 'tok "1" $HOME `x` \\n'


def directives(unit, key):
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(key + "=")]


def the_task(tasks_file, text):
    """The one task of the role's tasks_file that mentions text (fails unless exactly one)."""
    tasks = (ROLE / "tasks" / tasks_file).read_text()
    [task] = [block for block in tasks.split("\n- name: ") if text in block]
    return task


def test_a_worker_s_environment_is_in_its_own_root_only_file_not_in_the_unit(tmp_path):
    worker = {**WORKER, "environment": {"API_TOKEN": SECRET, "NODE_ENV": "production"}}
    dropin = rendered(tmp_path, "swiftdrop-worker.conf", item=worker)
    assert SECRET not in dropin and "API_TOKEN" not in dropin
    assert directives(dropin, "EnvironmentFile") == [
        "/etc/systemd/system/swiftdrop-worker@import.service.d/environment"]
    environment = rendered(tmp_path, "swiftdrop-worker.env", item=worker)
    assert [line for line in environment.splitlines() if not line.startswith("#")] == [
        'API_TOKEN="tok \\"1\\" \\$HOME \\`x\\` \\\\n"', 'NODE_ENV="production"']
    task = the_task("workers.yml", "swiftdrop-worker.env")
    assert 'mode: "0600"' in task and "owner: root" in task and "no_log: true" in task


def test_a_worker_without_environment_reads_no_file(tmp_path):
    assert directives(rendered(tmp_path, "swiftdrop-worker.conf", item=WORKER),
                      "EnvironmentFile") == []


def test_a_worker_s_timeout_becomes_run_s_timeout(tmp_path):
    [exec_start] = directives(rendered(tmp_path, "swiftdrop-worker.conf",
                                       item={**WORKER, "timeout": 120}), "ExecStart")
    assert re.search(r" run --concurrency 1 --timeout 120 -- node /srv/import.js$", exec_start)
    [exec_start] = directives(rendered(tmp_path, "swiftdrop-worker.conf", item=WORKER),
                              "ExecStart")
    assert "--timeout" not in exec_start  # the ini's queue_command_timeout then


def test_every_worker_has_a_home_and_a_cache_of_its_own_that_it_may_write(tmp_path):
    unit = rendered(tmp_path, "swiftdrop-worker@.service")
    assert directives(unit, "ProtectSystem") == ["strict"]
    assert directives(unit, "StateDirectory") == ["swiftdrop-worker/%i"]
    assert directives(unit, "CacheDirectory") == ["swiftdrop-worker/%i"]
    assert directives(unit, "Environment") == [
        "HOME=%S/swiftdrop-worker/%i XDG_CACHE_HOME=%C/swiftdrop-worker/%i"]


def test_the_retry_and_timeout_keys_reach_the_ini(tmp_path):
    destination = {"name": "DEFAULT", "container": "mail", "user": "u", "key": "k",
                   "authurl": "https://swift.example.test/auth/v1.0",
                   "queue_retry_longest": 7200, "queue_command_timeout": 0}
    ini = rendered(tmp_path, "swiftdrop.ini", swiftdrop_destinations=[destination])
    assert 'queue_retry_longest = "7200"' in ini and 'queue_command_timeout = "0"' in ini


def test_validation_refuses_a_bad_environment_name_or_a_negative_timeout(tmp_path):
    ok, _ = validate(tmp_path, swiftdrop_queue_workers=[
        {**WORKER, "environment": {"API_TOKEN": "x"}, "timeout": 0}])
    assert ok
    for bad in ({"environment": {"API-TOKEN": "x"}}, {"environment": {"1X": "x"}},
                {"timeout": -1}):
        ok, output = validate(tmp_path, swiftdrop_queue_workers=[{**WORKER, **bad}])
        assert not ok and "environment names of letters, digits and '_'" in output, bad


# -- webhooks ---------------------------------------------------------------------------

[SWIFT] = VARIABLES["swiftdrop_destinations"]
WEBHOOK_SECRET = 'hm"ac\'s $ecret'
HOOKS = {"name": "hooks", "recipients": ["hooks@example.com"], "container": "hooks",
         "webhook": {"url": "https://crm.example.test/inbound", "secret": WEBHOOK_SECRET}}


def webhook_destinations(**webhook):
    return [SWIFT, {**HOOKS, "webhook": {**HOOKS["webhook"], **webhook}}]


def test_a_destination_s_webhook_reaches_the_ini_as_the_filter_reads_it(tmp_path):
    ini = tmp_path / "swiftdrop.ini"
    ini.write_text(rendered(tmp_path, "swiftdrop.ini", swiftdrop_destinations=webhook_destinations(
        format="raw", timeout=12.5, insecure=False, inline_limit=1024, link_lifetime=3600,
        tempurl_key="tempurl-key", workers=3, metrics_listen="127.0.0.1:9911")))
    hooks = next(d for d in config.load(str(ini)).destinations if d.section == "hooks")
    assert hooks.webhook == config.WebhookSettings(
        url="https://crm.example.test/inbound", secret=WEBHOOK_SECRET, format="raw",
        timeout=12.5, insecure=False, inline_limit=1024, link_lifetime=3600.0,
        tempurl_key="tempurl-key")
    assert "workers" not in ini.read_text() and "metrics" not in ini.read_text()  # the unit's
    default = next(d for d in config.load(str(ini)).destinations if d.section == "DEFAULT")
    assert default.webhook is None


def test_a_webhook_s_ca_is_installed_as_a_file_the_ini_names(tmp_path):
    destinations = webhook_destinations(cacert="-----BEGIN CERTIFICATE-----")
    ini = rendered(tmp_path, "swiftdrop.ini", swiftdrop_destinations=destinations)
    assert 'webhook_cacert = "/etc/swiftdrop/ca/webhook/hooks.pem"' in ini
    task = the_task("config.yml", "_swiftdrop_webhooks[item].cacert | trim")
    assert "dest: \"{{ _swiftdrop_webhook_ca_dir }}/{{ item }}.pem\"" in task


def test_a_webhook_unit_runs_queue_run_without_a_command_for_its_destination(tmp_path):
    unit = "swiftdrop-webhook.conf"
    [exec_start] = directives(rendered(tmp_path, unit, item="hooks", _webhook={}), "ExecStart")
    assert exec_start.endswith(" --destination %i run --concurrency 1")
    dropin = rendered(tmp_path, unit, item="hooks", _webhook={
        **HOOKS["webhook"], "workers": 4, "metrics_listen": "127.0.0.1:9911"})
    [exec_start] = directives(dropin, "ExecStart")
    assert exec_start.endswith(" run --concurrency 4 --metrics-listen 127.0.0.1:9911")
    assert directives(dropin, "User") == ["swiftdrop-worker"]
    assert WEBHOOK_SECRET not in dropin and "crm.example.test" not in dropin


def hardening(unit):
    """The directives of the unit from its hardening on (LimitCORE= to UMask=)."""
    lines = [line for line in unit.splitlines() if line and not line.startswith("#")]
    start = lines.index("LimitCORE=0")
    return lines[start:lines.index("UMask=0027", start) + 1]


def test_a_webhook_unit_is_hardened_exactly_like_a_worker(tmp_path):
    worker = rendered(tmp_path, "swiftdrop-worker@.service")
    webhook = rendered(tmp_path, "swiftdrop-webhook@.service")
    assert len(hardening(worker)) > 20 and hardening(webhook) == hardening(worker)
    for key in ("Group", "SupplementaryGroups", "Restart", "KillMode"):
        assert directives(webhook, key) == directives(worker, key), key
    assert directives(webhook, "ExecStart") == [] and directives(webhook, "User") == []


def test_validation_names_the_destination_and_the_webhook_key(tmp_path):
    ok, output = validate(tmp_path, swiftdrop_destinations=webhook_destinations(
        workers=2, metrics_listen="127.0.0.1:9911"))
    assert ok, output
    for bad, message in (
            ({"url": "ftp://crm.example.test/"}, "swiftdrop_destinations[hooks].webhook.url:"),
            ({"secret": ""}, "swiftdrop_destinations[hooks].webhook.secret: is required"),
            ({"workers": 0}, "swiftdrop_destinations[hooks].webhook.workers: must be 1"),
            ({"metrics_listen": "9911"}, "swiftdrop_destinations[hooks].webhook.metrics_listen:"),
            ({"cacert": "not a PEM"}, "swiftdrop_destinations[hooks].webhook.cacert: needs PEM")):
        ok, output = validate(tmp_path, swiftdrop_destinations=webhook_destinations(**bad))
        assert not ok and message in output, (bad, output)
        assert WEBHOOK_SECRET not in output


def test_a_named_destination_s_webhook_may_inherit_default_s_url_and_secret(tmp_path):
    default = {**SWIFT, "webhook": {"url": "https://crm.example.test/", "secret": "s"}}
    hooks = {**HOOKS, "webhook": {"format": "raw"}}
    ok, output = validate(tmp_path, swiftdrop_destinations=[default, hooks])
    assert ok, output
    ok, output = validate(tmp_path, swiftdrop_destinations=[SWIFT, hooks])
    assert not ok and "swiftdrop_destinations[hooks].webhook.url:" in output


def test_the_webhook_s_secrets_are_no_log_in_the_argument_specs():
    specs = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())
    destinations = specs["argument_specs"]["main"]["options"]["swiftdrop_destinations"]
    webhook = destinations["options"]["webhook"]["options"]
    assert webhook["secret"]["no_log"] and webhook["tempurl_key"]["no_log"]


# -- consumer groups (a destination indexed by a Redis stream) ----------------------------

STREAM = {**SWIFT, "queue_index": "redis-stream", "queue_redis_url": "redis://r.test:6379/0"}


def test_a_worker_s_group_goes_after_the_destination_as_the_cli_takes_it(tmp_path):
    [exec_start] = directives(rendered(tmp_path, "swiftdrop-worker.conf",
                                       item={**WORKER, "group": "billing-team"}), "ExecStart")
    assert re.search(r" queue --config /etc/swiftdrop.ini --destination DEFAULT "
                     r"--group billing-team run --concurrency 1 -- node /srv/import.js$",
                     exec_start), exec_start
    for item in (WORKER, {**WORKER, "group": None}):  # none: the command's default group
        [exec_start] = directives(rendered(tmp_path, "swiftdrop-worker.conf", item=item),
                                  "ExecStart")
        assert "--group" not in exec_start


def test_the_group_is_in_the_specs_without_a_default():
    specs = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())
    workers = specs["argument_specs"]["main"]["options"]["swiftdrop_queue_workers"]
    assert workers["options"]["group"]["type"] == "str"
    assert "default" not in workers["options"]["group"]


def test_two_teams_in_two_groups_on_a_stream_pass_validation(tmp_path):
    ok, output = validate(tmp_path, swiftdrop_destinations=[STREAM], swiftdrop_queue_workers=[
        {**WORKER, "group": "crm"}, {**WORKER, "name": "archive", "group": "archive.v2"}])
    assert ok, output


def test_validation_refuses_a_group_on_a_listed_queue_or_one_systemd_would_mangle(tmp_path):
    for destinations, group, index in (([SWIFT], "crm", "listing"),
                                       ([STREAM], "crm team", "redis-stream"),
                                       ([STREAM], "100%", "redis-stream"),
                                       ([STREAM], "-crm", "redis-stream"),
                                       ([STREAM], "c" * 65, "redis-stream")):
        ok, output = validate(tmp_path, swiftdrop_destinations=destinations,
                              swiftdrop_queue_workers=[{**WORKER, "group": group}])
        assert not ok, group
        assert (f"swiftdrop_queue_workers[import]: group {json.dumps(group)} needs a name of "
                "letters, digits") in output, output
        assert f"(DEFAULT's is {index})" in output, output


def test_validation_refuses_dedup_on_a_stream_which_the_command_would_refuse(tmp_path):
    ok, output = validate(tmp_path, swiftdrop_destinations=[STREAM],
                          swiftdrop_queue_workers=[{**WORKER, "dedup": True}])
    assert not ok
    assert "swiftdrop_queue_workers[import]: dedup needs the listing queue" in output, output
    ok, output = validate(tmp_path, swiftdrop_destinations=[STREAM],
                          swiftdrop_queue_workers=[{**WORKER, "dedup": False, "group": "a" * 64}])
    assert ok, output
