"""The role's worker units as Ansible renders them, and validate.yml's checks of workers.

Run by Ansible itself on the controller (tests/support/role.py): nothing on
this machine is changed. The deployed units are verified in Molecule
(molecule/consumer/verify.yml): a vaulted variable reaching the command, its
cache directory writable, a crash retried.
"""

import re

from tests.support.role import ROLE, rendered, validate

WORKER = {"name": "import", "command": ["node", "/srv/import.js"]}
SECRET = 'tok "1" $HOME `x` \\n'


def directives(unit, key):
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(key + "=")]


def test_a_worker_s_environment_is_in_its_own_root_only_file_not_in_the_unit(tmp_path):
    worker = {**WORKER, "environment": {"API_TOKEN": SECRET, "NODE_ENV": "production"}}
    dropin = rendered(tmp_path, "swiftdrop-worker.conf", item=worker)
    assert SECRET not in dropin and "API_TOKEN" not in dropin
    assert directives(dropin, "EnvironmentFile") == [
        "/etc/systemd/system/swiftdrop-worker@import.service.d/environment"]
    environment = rendered(tmp_path, "swiftdrop-worker.env", item=worker)
    assert [line for line in environment.splitlines() if not line.startswith("#")] == [
        'API_TOKEN="tok \\"1\\" \\$HOME \\`x\\` \\\\n"', 'NODE_ENV="production"']
    tasks = (ROLE / "tasks/workers.yml").read_text()
    [task] = [block for block in tasks.split("\n- name: ") if "swiftdrop-worker.env" in block]
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
