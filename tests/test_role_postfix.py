"""The role's master.cf as Postfix reads it, with services an inventory adds.

Rendered by Ansible itself (the template module, the role's defaults and
vars) on the controller, then parsed by Debian's real `postconf -M`: the
data in defaults/main.yml and swiftdrop_postfix_master_cf_extra must come
out as services Postfix knows. The deployed file is checked by `postfix
check` in Molecule.
"""

import subprocess

from tests.support.role import rendered


def render_master_cf(directory, **variables):
    """master.cf into DIRECTORY, with a main.cf beside it for postconf -c."""
    rendered(directory, "master.cf", **variables)
    (directory / "main.cf").write_text("compatibility_level = 3.6\n")


def postfix_services(directory):
    """{(service, type): the whole line} as Postfix's own parser reads master.cf."""
    lines = subprocess.run(["postconf", "-c", str(directory), "-M"], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    return {tuple(line.split()[:2]): " ".join(line.split()) for line in lines}


def test_the_role_alone_wires_every_session_to_the_filter(tmp_path):
    render_master_cf(tmp_path)
    services = postfix_services(tmp_path)
    assert services[("smtpd", "pass")].endswith(
        "smtpd -o smtpd_proxy_filter=unix:private/swiftdrop"
        " -o smtpd_proxy_timeout=100s -o smtpd_proxy_options=speed_adjust")
    assert ("submission", "inet") not in services


def test_an_inventory_adds_a_service_and_replaces_one(tmp_path):
    render_master_cf(tmp_path, swiftdrop_postfix_master_cf_extra=[
        {"service": "127.0.0.1:10587", "type": "inet", "private": "n", "command": "smtpd",
         "options": {"syslog_name": "postfix/local-submission"}},
        {"service": "relay", "type": "unix", "command": "smtp",
         "options": {"smtp_bind_address": "127.0.0.1"}},
    ])
    services = postfix_services(tmp_path)
    assert services[("127.0.0.1:10587", "inet")] == (
        "127.0.0.1:10587 inet n - - - - smtpd -o syslog_name=postfix/local-submission")
    assert services[("relay", "unix")] == "relay unix - - - - - smtp -o smtp_bind_address=127.0.0.1"
    assert ("smtpd", "pass") in services  # the role's own services are still there
