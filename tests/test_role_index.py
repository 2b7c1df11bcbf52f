"""The queue's Redis stream index as the role sets it up: the ini, the checks, Redis, the timers.

Run by Ansible itself on the controller (tests/support/role.py): the role's
defaults and vars, validate.yml, and its templates rendered into the test's
directory; nothing on this machine is changed. The ini is read by
swiftdrop.config as the filter and the queue commands read it.
"""

import json
import re

import pytest
import yaml

from swiftdrop import config
from tests.support.role import ROLE, VARIABLES, rendered, run_role, validate

[SWIFT] = VARIABLES["swiftdrop_destinations"]
BILLING = {"name": "billing", "recipients": ["billing@example.com"], "container": "billing"}
STREAM = {**BILLING, "queue_index": "redis-stream"}
VAULTED_URL = "redis://:s3cret@redis.example.test:6379/2"
SOCKET = "/run/redis/redis-server.sock"
LOCAL_URL = f'queue_redis_url = "unix://{SOCKET}?db=0"'


def sections(ini):
    """Each section's lines but comments, by name."""
    found, name = {}, None
    for line in ini.splitlines():
        if line.startswith("["):
            name = line.strip("[]")
            found[name] = []
        elif name and line and not line.startswith("#"):
            found[name].append(line)
    return found


def specs():
    return yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())[
        "argument_specs"]["main"]["options"]


# -- the variables ------------------------------------------------------------------------

def test_the_variables_are_in_the_specs_with_their_defaults():
    options = specs()
    index = options["swiftdrop_destinations"]["options"]["queue_index"]
    assert (index["type"], index["choices"]) == ("str", ["listing", "redis-stream"])
    assert "default" not in index  # left out of the ini unless set: DEFAULT's or listing
    install = options["swiftdrop_redis_install"]
    assert (install["type"], install["default"]) == ("bool", False)
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    assert defaults["swiftdrop_redis_install"] is False
    assert options["swiftdrop_destinations"]["options"]["queue_redis_url"]["no_log"]


# -- the ini ------------------------------------------------------------------------------

def test_queue_index_reaches_the_ini_as_the_destination_sets_it(tmp_path):
    ini = sections(rendered(tmp_path, "swiftdrop.ini", swiftdrop_destinations=[
        {**SWIFT, "queue_index": "listing"},
        {**STREAM, "queue_redis_url": VAULTED_URL}]))
    assert 'queue_index = "listing"' in ini["DEFAULT"]
    assert 'queue_index = "redis-stream"' in ini["billing"]
    assert f'queue_redis_url = "{VAULTED_URL}"' in ini["billing"]


def test_without_queue_index_the_ini_says_nothing_and_the_listing_stays(tmp_path):
    ini = rendered(tmp_path, "swiftdrop.ini", swiftdrop_destinations=[SWIFT, BILLING])
    assert "queue_index" not in ini and "queue_redis_url" not in ini


def test_the_installed_redis_is_the_url_of_each_destination_that_needs_one(tmp_path):
    ini = sections(rendered(tmp_path, "swiftdrop.ini", swiftdrop_redis_install=True,
                            swiftdrop_destinations=[SWIFT, STREAM]))
    assert LOCAL_URL in ini["billing"] and LOCAL_URL not in ini["DEFAULT"]
    # The Redis lock needs one too, inherited or not; a listed destination with the Swift
    # lock does not.
    ini = sections(rendered(tmp_path, "swiftdrop.ini", swiftdrop_redis_install=True,
                            swiftdrop_destinations=[{**SWIFT, "queue_lock": "redis"}, BILLING,
                                                    {**BILLING, "name": "swift-locked",
                                                     "queue_lock": "swift"}]))
    assert LOCAL_URL in ini["DEFAULT"] and LOCAL_URL in ini["billing"]
    assert not any("queue_redis_url" in line for line in ini["swift-locked"])
    ini = rendered(tmp_path, "swiftdrop.ini", swiftdrop_redis_install=True,
                   swiftdrop_destinations=[SWIFT, BILLING])
    assert "queue_redis_url" not in ini


def test_a_url_of_its_own_or_default_s_wins_over_the_installed_redis(tmp_path):
    own = {**STREAM, "queue_redis_url": VAULTED_URL}
    ini = sections(rendered(tmp_path, "swiftdrop.ini", swiftdrop_redis_install=True,
                            swiftdrop_destinations=[SWIFT, own]))
    assert [line for line in ini["billing"] if "queue_redis_url" in line] == [
        f'queue_redis_url = "{VAULTED_URL}"']
    # DEFAULT's URL is inherited by the ini itself: nothing to add to billing.
    ini = sections(rendered(tmp_path, "swiftdrop.ini", swiftdrop_redis_install=True,
                            swiftdrop_destinations=[{**SWIFT, "queue_redis_url": VAULTED_URL},
                                                    STREAM]))
    assert not any("queue_redis_url" in line for line in ini["billing"])


def test_default_s_index_is_inherited_and_an_empty_url_is_none(tmp_path):
    ini = sections(rendered(tmp_path, "swiftdrop.ini", swiftdrop_redis_install=True,
                            swiftdrop_destinations=[
                                {**SWIFT, "queue_index": "redis-stream", "queue_redis_url": ""},
                                {**BILLING, "queue_index": None}]))
    assert ini["DEFAULT"][-2:] == ['queue_index = "redis-stream"', LOCAL_URL]
    assert LOCAL_URL in ini["billing"]  # inherits the stream, names no URL of its own either
    assert sum("queue_redis_url" in line for line in ini["DEFAULT"]) == 1


# -- the checks ---------------------------------------------------------------------------

def test_a_stream_without_a_redis_stops_the_play_naming_the_destination(tmp_path):
    ok, output = validate(tmp_path, swiftdrop_destinations=[SWIFT, STREAM])
    assert not ok
    assert ("swiftdrop_destinations[billing]: uses Redis (queue_index redis-stream, queue_lock "
            "swift) and names none: set queue_redis_url") in output, output
    # Inherited from DEFAULT, the same.
    ok, output = validate(tmp_path, swiftdrop_destinations=[
        {**SWIFT, "queue_index": "redis-stream"}, BILLING])
    assert not ok and "swiftdrop_destinations[DEFAULT]: uses Redis" in output


@pytest.mark.parametrize("variables", [
    {"swiftdrop_destinations": [SWIFT, {**STREAM, "queue_redis_url": VAULTED_URL}]},
    {"swiftdrop_destinations": [{**SWIFT, "queue_redis_url": VAULTED_URL}, STREAM]},
    {"swiftdrop_destinations": [SWIFT, STREAM], "swiftdrop_redis_install": True},
    {"swiftdrop_destinations": [SWIFT, BILLING]},
])
def test_a_stream_with_a_redis_passes(tmp_path, variables):
    ok, output = validate(tmp_path, **variables)
    assert ok, output
    assert "s3cret" not in output


def test_the_check_never_shows_a_redis_url(tmp_path):
    ok, output = validate(tmp_path, swiftdrop_destinations=[
        SWIFT, STREAM, {**BILLING, "name": "other", "queue_redis_url": VAULTED_URL,
                        "queue_index": "redis-stream"}])
    assert not ok and "swiftdrop_destinations[billing]" in output
    assert "s3cret" not in output


# -- Redis --------------------------------------------------------------------------------

def directives(conf):
    return [line.split(None, 1) for line in conf.splitlines() if line and not line.startswith("#")]


def test_the_installed_redis_listens_on_a_socket_for_its_group_only_and_syncs_every_write(
        tmp_path):
    """No password: whoever reaches it reads the envelopes and can XACK/XDEL entries."""
    conf = directives(rendered(tmp_path, "redis-swiftdrop.conf"))
    assert conf == [["port", "0"], ["unixsocket", SOCKET], ["unixsocketperm", "770"],
                    ["protected-mode", "yes"], ["appendonly", "yes"], ["appendfsync", "always"]]


def test_redis_reads_the_role_s_settings_last_and_restarts_when_they_change():
    tasks = yaml.safe_load((ROLE / "tasks/redis.yml").read_text())
    by_name = {task["name"]: task for task in tasks}
    include = next(task["ansible.builtin.lineinfile"] for task in tasks
                   if "ansible.builtin.lineinfile" in task)
    assert include == {"path": "/etc/redis/redis.conf",
                       "line": "include /etc/redis/swiftdrop.conf", "insertafter": "EOF"}
    notified = [task.get("notify") for task in by_name.values()
                if "ansible.builtin.template" in task or "ansible.builtin.lineinfile" in task]
    assert notified == ["Restart Redis", "Restart Redis"]  # and the one without a socket
    assert any(task.get("ansible.builtin.apt", {}).get("name") == "redis-server" for task in tasks)
    handlers = yaml.safe_load((ROLE / "handlers/main.yml").read_text())
    [restart] = [handler for handler in handlers if handler["name"] == "Restart Redis"]
    assert restart["ansible.builtin.systemd_service"] == {"name": "redis-server.service",
                                                          "state": "restarted"}
    names = [handler["name"] for handler in handlers]
    assert names.index("Restart Redis") < names.index("Restart the filter")
    main = yaml.safe_load((ROLE / "tasks/main.yml").read_text())
    [imported] = [task for task in main if task.get("ansible.builtin.import_tasks") == "redis.yml"]
    assert imported["when"] == "swiftdrop_redis_install"


def test_redis_writes_its_append_only_file_before_it_restarts_into_the_role_s_settings():
    """Started with appendonly yes and no such file yet, Redis 7 starts empty whatever its
    snapshot holds (seen on Debian 12's 7.0); switched on at run time, it writes the file
    from memory first. So: start, switch on at run time and wait, then the settings."""
    tasks = yaml.safe_load((ROLE / "tasks/redis.yml").read_text())
    steps = [next(iter(set(task) - {"name", "register", "changed_when", "failed_when",
                                    "check_mode", "when", "until", "retries", "delay",
                                    "notify"}))
             for task in tasks]
    assert steps == ["ansible.builtin.apt", "ansible.builtin.systemd_service",
                     "ansible.builtin.stat", "ansible.builtin.set_fact",
                     "ansible.builtin.command", "ansible.builtin.command",
                     "ansible.builtin.command", "ansible.builtin.template",
                     "ansible.builtin.lineinfile", "ansible.builtin.debug"]
    ask, switch, wait = tasks[4:7]
    assert ask["ansible.builtin.command"]["argv"][3:] == ["CONFIG", "GET", "appendonly"]
    assert switch["ansible.builtin.command"]["argv"][3:] == [
        "CONFIG", "SET", "appendonly", "yes", "appendfsync", "always"]
    assert "!= 'yes'" in switch["when"]
    assert "'aof_rewrite_in_progress:0'" in wait["until"]
    assert "'aof_last_bgrewrite_status:ok'" in wait["until"]
    assert wait["when"] == "not ansible_check_mode"  # it would retry a command --check skips


def test_redis_cli_reaches_redis_on_its_socket_or_on_debian_s_port_before_the_restart(
        tmp_path):
    """Redis cannot open its socket at run time: the package's own start (or a Redis in use
    before) is on 127.0.0.1:6379 until the restart into the role's settings."""
    tasks = yaml.safe_load((ROLE / "tasks/redis.yml").read_text())
    stat, reach = tasks[2:4]
    assert stat["ansible.builtin.stat"]["path"] == "{{ _swiftdrop_redis_socket }}"
    for task in tasks[4:7]:
        assert task["ansible.builtin.command"]["argv"][:3] == [
            "redis-cli", "{{ _swiftdrop_redis_cli_address[0] }}",
            "{{ _swiftdrop_redis_cli_address[1] }}"]
    expression = reach["ansible.builtin.set_fact"]["_swiftdrop_redis_cli_address"]
    for found, address in (({"exists": True, "issock": True}, ["-s", SOCKET]),
                           ({"exists": True, "issock": False}, ["-p", "6379"]),
                           ({"exists": False}, ["-p", "6379"])):
        assert role_value(tmp_path, "address", address=expression,
                          _swiftdrop_redis_socket_stat={"stat": found}) == address
    # One without its socket is restarted onto it, settings file changed or not.
    restart = tasks[-1]
    assert restart["notify"] == "Restart Redis" and restart["changed_when"] is True
    assert restart["when"] == "not _swiftdrop_redis_socket_stat.stat.issock | default(false)"


def test_the_redis_client_library_comes_with_a_destination_that_uses_redis():
    tasks = yaml.safe_load((ROLE / "tasks/filter.yml").read_text())
    [task] = [task for task in tasks if task.get("ansible.builtin.apt", {}).get("name")
              == "python3-redis"]
    assert re.fullmatch(r"_swiftdrop_redis_destinations \| length > 0", task["when"])


# -- the reconcile timers -----------------------------------------------------------------

def unit_lines(unit):
    return [line for line in unit.splitlines() if line and not line.startswith("#")]


def test_the_reconcile_service_runs_reconcile_for_its_destination_as_recover_does(tmp_path):
    reconcile = rendered(tmp_path, "swiftdrop-reconcile@.service")
    recover = rendered(tmp_path, "swiftdrop-recover@.service")
    [exec_start] = [line for line in unit_lines(reconcile) if line.startswith("ExecStart=")]
    assert exec_start == ("ExecStart=/opt/swiftdrop/venv/bin/swiftdrop queue --config "
                          "/etc/swiftdrop.ini --destination %i reconcile")
    # The same user, type and hardening: everything but the description and the command.
    different = ("Description=", "ExecStart=")
    assert [line for line in unit_lines(reconcile) if not line.startswith(different)] == \
        [line for line in unit_lines(recover) if not line.startswith(different)]
    assert "User=swiftdrop" in unit_lines(reconcile) and "PrivateUsers=yes" in unit_lines(reconcile)


def test_the_reconcile_timer_runs_every_minute_from_boot_on(tmp_path):
    timer = unit_lines(rendered(tmp_path, "swiftdrop-reconcile@.timer"))
    assert timer[timer.index("[Timer]"):] == [
        "[Timer]", "OnBootSec=1min", "OnUnitActiveSec=1min", "AccuracySec=1s",
        "[Install]", "WantedBy=timers.target"]


def role_value(directory, expression, **variables):
    """What the role's vars make of `expression` with these variables, as JSON."""
    ok, output = run_role(directory, f"""\
        - ansible.builtin.copy:
            content: "{{{{ {expression} | to_json }}}}"
            dest: {directory}/value.json
            mode: "0644"
        """, **variables)
    assert ok, output
    return json.loads((directory / "value.json").read_text())


def test_only_destinations_indexed_by_a_stream_have_a_reconcile_timer(tmp_path):
    destinations = [{**SWIFT, "queue_index": "redis-stream", "queue_redis_url": VAULTED_URL},
                    {**BILLING, "queue_index": "listing"},
                    {**BILLING, "name": "inherits"}]
    assert role_value(tmp_path, "_swiftdrop_wanted_reconcile_timers",
                      swiftdrop_destinations=destinations) == [
        "swiftdrop-reconcile@DEFAULT.timer", "swiftdrop-reconcile@inherits.timer"]
    assert role_value(tmp_path, "_swiftdrop_wanted_reconcile_timers") == []


def test_the_workers_tasks_enable_wanted_timers_and_disable_every_other_one():
    tasks = {task["name"]: task for task in
             yaml.safe_load((ROLE / "tasks/workers.yml").read_text())}
    [install] = [task for name, task in tasks.items() if name.startswith("Install the worker")]
    assert {"swiftdrop-reconcile@.service", "swiftdrop-reconcile@.timer"} <= set(install["loop"])
    [enable] = [task for name, task in tasks.items()
                if name.startswith("Enable and start the reconcile timers")]
    assert enable["ansible.builtin.systemd_service"] == {
        "name": "swiftdrop-reconcile@{{ item }}.timer", "enabled": True, "state": "started"}
    assert enable["loop"] == "{{ _swiftdrop_index_destinations }}"
    found = tasks["Find the reconcile timers enabled on the host"]["ansible.builtin.find"]
    assert found["paths"] == "/etc/systemd/system/timers.target.wants"
    disable = tasks["Stop and disable the reconcile timers of destinations without a stream"]
    assert disable["ansible.builtin.systemd_service"] == {
        "name": "{{ item }}", "state": "stopped", "enabled": False}
    assert "reject('in', _swiftdrop_wanted_reconcile_timers)" in disable["loop"]


def test_the_filter_starts_after_the_redis_on_its_host(tmp_path):
    """Its ExecStartPre check asks a stream index's Redis, which must be up by then."""
    unit = unit_lines(rendered(tmp_path, "swiftdrop.service", swiftdrop_redis_install=True))
    assert {"After=redis-server.service", "Wants=redis-server.service"} <= set(unit)
    assert "redis" not in rendered(tmp_path, "swiftdrop.service")


def test_the_ini_the_role_writes_is_what_the_config_loader_reads(tmp_path):
    ini = tmp_path / "swiftdrop.ini"
    ini.write_text(rendered(tmp_path, "swiftdrop.ini", swiftdrop_redis_install=True,
                            swiftdrop_destinations=[{**SWIFT, "queue_index": "listing"},
                                                    STREAM, {**BILLING, "name": "inherits",
                                                             "recipients": ["i@example.com"]}]))
    loaded = {d.section: d.queue for d in config.load(str(ini)).destinations}
    assert (loaded["DEFAULT"].index, loaded["inherits"].index) == ("listing", "listing")
    assert loaded["billing"].index == "redis-stream"
    assert loaded["billing"].redis_url == f"unix://{SOCKET}?db=0"


# -- who reaches the socket: group redis --------------------------------------------------

def groups(unit):
    return [line.split("=", 1)[1] for line in unit_lines(unit)
            if line.startswith("SupplementaryGroups=")]


LOCAL = {"swiftdrop_redis_install": True, "swiftdrop_destinations": [SWIFT, STREAM]}


def test_the_filter_and_the_timers_join_group_redis_when_a_destination_uses_the_local_one(
        tmp_path):
    for unit in ("swiftdrop.service", "swiftdrop-reconcile@.service",
                 "swiftdrop-recover@.service", "swiftdrop-purge@.service",
                 "swiftdrop-queue-stats@.service"):
        assert "redis" in groups(rendered(tmp_path, unit, **LOCAL)), unit
        # No Redis here, or every destination that uses one names its own: no group.
        assert "redis" not in groups(rendered(tmp_path, unit)), unit
        assert "redis" not in groups(rendered(
            tmp_path, unit, swiftdrop_redis_install=True,
            swiftdrop_destinations=[SWIFT, {**STREAM, "queue_redis_url": VAULTED_URL}])), unit
    # The hardening stays as it was: PrivateUsers= does not keep the group from the socket.
    assert "PrivateUsers=yes" in unit_lines(rendered(tmp_path, "swiftdrop.service", **LOCAL))


def test_a_worker_or_webhook_joins_group_redis_only_on_a_destination_using_the_local_one(
        tmp_path):
    worker = {"name": "archive", "command": ["archive"], "destination": "billing",
              "group": "archive"}
    conf = rendered(tmp_path, "swiftdrop-worker.conf", item=worker, **LOCAL)
    assert groups(conf) == ["redis"]
    # and starts after that Redis: a boot does not begin with failed claims
    assert {"After=redis-server.service", "Wants=redis-server.service"} <= set(unit_lines(conf))
    assert groups(rendered(tmp_path, "swiftdrop-worker.conf",
                           item={**worker, "destination": "DEFAULT", "group": None},
                           **LOCAL)) == []
    assert groups(rendered(tmp_path, "swiftdrop-worker.conf", item=worker,
                           swiftdrop_destinations=[SWIFT, {**STREAM,
                                                           "queue_redis_url": VAULTED_URL}])) == []
    # a destination that names the local socket itself uses that Redis too
    assert groups(rendered(tmp_path, "swiftdrop-worker.conf", item=worker,
                           swiftdrop_redis_install=True,
                           swiftdrop_destinations=[SWIFT, {
                               **STREAM, "queue_redis_url": f"unix://{SOCKET}?db=3"}])) == ["redis"]
    hooked = {**STREAM, "webhook": {"url": "https://hooks.example.test/in", "secret": "s"}}
    webhook = rendered(tmp_path, "swiftdrop-webhook.conf", item="billing",
                       _webhook=hooked["webhook"], swiftdrop_redis_install=True,
                       swiftdrop_destinations=[SWIFT, hooked])
    assert groups(webhook) == ["redis"]
    assert "After=redis-server.service" in unit_lines(webhook)
    elsewhere = rendered(tmp_path, "swiftdrop-webhook.conf", item="DEFAULT",
                         _webhook=hooked["webhook"], swiftdrop_redis_install=True,
                         swiftdrop_destinations=[{**SWIFT, "webhook": hooked["webhook"]},
                                                 STREAM])
    assert groups(elsewhere) == []
    assert "After=redis-server.service" not in unit_lines(elsewhere)


# -- the queue-stats timer: the announce lag ----------------------------------------------

def test_every_destination_with_a_stream_gets_the_queue_stats_timer_workers_or_not(tmp_path):
    """SwiftDropAnnounceLag's figure comes from it alone: on an MX without workers too."""
    destinations = [SWIFT, STREAM, {**BILLING, "name": "listed", "recipients": ["l@example.com"]}]
    assert role_value(tmp_path, "_swiftdrop_stats_destinations", swiftdrop_redis_install=True,
                      swiftdrop_destinations=destinations) == ["billing"]
    assert role_value(tmp_path, "_swiftdrop_stats_destinations", swiftdrop_redis_install=True,
                      swiftdrop_destinations=destinations,
                      swiftdrop_queue_workers=[{"name": "w", "command": ["w"],
                                                "destination": "listed"},
                                               {"name": "a", "command": ["a"],
                                                "destination": "billing", "group": "a"}]) == [
        "listed", "billing"]
    tasks = {task["name"]: task for task in
             yaml.safe_load((ROLE / "tasks/workers.yml").read_text())}
    stats = tasks["Write the queue figures for node_exporter, or stop doing so"]
    assert stats["loop"] == "{{ _swiftdrop_stats_destinations }}"
    assert stats["ansible.builtin.systemd_service"]["name"] == (
        "swiftdrop-queue-stats@{{ item }}.timer")


def test_a_stream_needs_a_store_timeout_below_two_minutes(tmp_path):
    variables = {"swiftdrop_destinations": [SWIFT, {**STREAM, "queue_redis_url": VAULTED_URL}],
                 "swiftdrop_smtpd_proxy_timeout": 300}
    ok, output = validate(tmp_path, swiftdrop_store_timeout=120, **variables)
    assert not ok
    assert "swiftdrop_store_timeout (120) must be below 120 s with a stream index (billing" \
        in output, output
    ok, output = validate(tmp_path, swiftdrop_store_timeout=119, **variables)
    assert ok, output
