"""The filter's connection limit and spool as the role sets and checks them.

Run by Ansible itself on the controller (localhost, connection local): the
role's defaults and vars, its validate.yml and spool.yml tasks, and its
templates; master.cf is then read by Debian's real `postconf -M`. Nothing
on this machine is changed: the tasks run are checks, and the templates
are written into the test's directory. The deployed unit and directory
are verified in Molecule (molecule/default/verify.yml).
"""

import pathlib
import re

from tests.support.role import ROLE, rendered, run_role, validate
from tests.test_role_postfix import postfix_services, render_master_cf

# A loopback listener for local tools whose sessions go to the filter too, as
# molecule/default adds one.
LOCAL_LISTENER = {"service": "127.0.0.1:2525", "type": "inet", "private": "n",
                  "command": "smtpd",
                  "options": {"smtpd_proxy_filter": "unix:private/swiftdrop"}}


def exec_start_option(unit, option):
    [exec_start] = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    arguments = exec_start.split()
    return arguments[arguments.index(option) + 1]


def master_cf_services(directory, **variables):
    render_master_cf(directory, **variables)
    return postfix_services(directory)


# --- the connection limit ------------------------------------------------------------------

def test_postfix_smtpd_process_limit_is_the_maxproc_of_the_smtpd_behind_postscreen(tmp_path):
    services = master_cf_services(tmp_path, swiftdrop_smtpd_process_limit=30)
    assert services[("smtpd", "pass")].split()[6] == "30"
    assert services[("smtp", "inet")].split()[6:8] == ["1", "postscreen"]


def test_without_postscreen_the_limit_is_port_25s_smtpd(tmp_path):
    services = master_cf_services(tmp_path, swiftdrop_smtpd_process_limit=30,
                                  swiftdrop_postscreen=False)
    assert services[("smtp", "inet")].split()[6:8] == ["30", "smtpd"]
    assert ("smtpd", "pass") not in services


def test_the_filter_takes_exactly_as_many_sessions_as_postfix_can_open(tmp_path):
    unit = rendered(tmp_path, "swiftdrop.service")
    assert exec_start_option(unit, "--max-connections") == "100"
    # The administrator's loopback listener does not use the filter; a listener added
    # with smtpd_proxy_filter does, with its own process limit ("-": default_process_limit).
    unit = rendered(tmp_path, "swiftdrop.service", swiftdrop_admin_address="admin@example.org",
                    swiftdrop_smtpd_process_limit=40,
                    swiftdrop_postfix_master_cf_extra=[LOCAL_LISTENER],
                    swiftdrop_postfix_main_cf_extra={"default_process_limit": "25"})
    assert exec_start_option(unit, "--max-connections") == "65"
    unit = rendered(tmp_path, "swiftdrop.service", swiftdrop_postscreen=False,
                    swiftdrop_smtpd_process_limit=40)
    assert exec_start_option(unit, "--max-connections") == "40"


def test_the_defaults_pass_validation_with_and_without_an_extra_listener(tmp_path):
    for variables in ({}, {"swiftdrop_postfix_master_cf_extra": [LOCAL_LISTENER]},
                      {"swiftdrop_postscreen": False}):
        ok, output = validate(tmp_path, **variables)
        assert ok, output


def test_validation_refuses_a_filter_limit_below_postfixs(tmp_path):
    ok, output = validate(tmp_path, swiftdrop_max_connections=150,
                          swiftdrop_postfix_master_cf_extra=[LOCAL_LISTENER])
    assert not ok
    assert re.search(r"swiftdrop_max_connections \(150\) must be at least the 200 sessions .*"
                     r"\(smtpd: 100, 127\.0\.0\.1:2525: 100\): .*backlog and Postfix answers 451 "
                     r"after smtpd_proxy_timeout \(100 s\)", output), output
    ok, output = validate(tmp_path, swiftdrop_max_connections=200,
                          swiftdrop_postfix_master_cf_extra=[LOCAL_LISTENER])
    assert ok, output


def test_validation_refuses_a_service_without_a_process_limit(tmp_path):
    ok, output = validate(tmp_path, swiftdrop_postfix_master_cf_extra=[
        {**LOCAL_LISTENER, "maxproc": "0"}])
    assert not ok
    assert "127.0.0.1:2525: maxproc 0 is no limit at all" in output, output


def test_a_service_that_takes_the_filter_from_main_cf_counts_too(tmp_path):
    ok, output = validate(tmp_path, swiftdrop_max_connections=100,
                          swiftdrop_postfix_main_cf_extra={
                              "smtpd_proxy_filter": "unix:/var/spool/postfix/private/swiftdrop"},
                          swiftdrop_postfix_master_cf_extra=[
                              {"service": "127.0.0.1:2525", "type": "inet", "command": "smtpd",
                               "maxproc": "10"}])
    assert not ok
    assert "(smtpd: 100, 127.0.0.1:2525: 10)" in output, output


# --- the spool -----------------------------------------------------------------------------

SPOOL_CHECK = f"- ansible.builtin.import_tasks: {ROLE}/tasks/spool.yml\n"


def test_the_unit_spools_to_the_spool_dir_and_may_write_there(tmp_path):
    unit = rendered(tmp_path, "swiftdrop.service", swiftdrop_spool_dir="/srv/spool")
    assert exec_start_option(unit, "--spool-dir") == "/srv/spool"
    assert "\nReadWritePaths=/srv/spool\n" in unit
    assert "\nProtectSystem=strict\n" in unit and "\nPrivateTmp=yes\n" in unit


def test_a_spool_on_disk_is_reported_with_its_worst_case_and_free_space(tmp_path):
    """Also under --check, and without changing anything (the directory need not exist)."""
    spool_dir = tmp_path / "not" / "yet" / "spool"
    for check in (False, True):
        ok, output = run_role(tmp_path, SPOOL_CHECK, check=check,
                              swiftdrop_spool_dir=str(spool_dir))
        assert ok, output
        assert re.search(rf"{spool_dir} is on \w+ \(mounted on /\S*\); at worst the filter "
                         r"spools 100 sessions x 50\.00 MB = 4\.88 GB there, and [\d.]+ [KMGT]?B "
                         r"are free", output), output
        assert "changed=0" in output and "failed=0" in output, output
    assert not spool_dir.exists()


def test_a_spool_in_ram_stops_the_run_unless_the_operator_allows_it(tmp_path):
    spool_dir = "/dev/shm/swiftdrop-test-spool"  # a tmpfs on Debian; not created by the check
    ok, output = run_role(tmp_path, SPOOL_CHECK, swiftdrop_spool_dir=spool_dir,
                          swiftdrop_max_connections=120)
    assert not ok
    assert (f"{spool_dir} is on tmpfs (mounted on /dev/shm); at worst the filter spools 120 "
            "sessions x 50.00 MB = 5.86 GB there, which is RAM. Set swiftdrop_spool_dir to a "
            "directory on disk") in output, output
    ok, output = run_role(tmp_path, SPOOL_CHECK, swiftdrop_spool_dir=spool_dir,
                          swiftdrop_spool_allow_tmpfs=True)
    assert ok, output
    assert f"{spool_dir} is on tmpfs" in output
    assert not pathlib.Path(spool_dir).exists()


def test_validation_refuses_a_spool_dir_the_unit_cannot_take(tmp_path):
    for spool_dir in ("spool", "/var/spool/swift drop", "/"):
        ok, output = validate(tmp_path, swiftdrop_spool_dir=spool_dir)
        assert not ok
        assert "must be an absolute path without spaces, and not /" in output, output
