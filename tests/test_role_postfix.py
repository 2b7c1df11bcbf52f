"""The role's main.cf and master.cf as Postfix reads them, with what an inventory adds.

Rendered by Ansible itself (the template module, the role's defaults and
vars) on the controller, then parsed by Debian's real `postconf`: the
data in defaults/main.yml and swiftdrop_postfix_master_cf_extra must come
out as services Postfix knows, and main.cf as parameters it knows. The
deployed files are checked by `postfix check` in Molecule.
"""

import subprocess

from tests.support.role import rendered


def render_master_cf(directory, **variables):
    """master.cf into DIRECTORY, with a main.cf beside it for postconf -c."""
    rendered(directory, "master.cf", **variables)
    (directory / "main.cf").write_text("compatibility_level = 3.6\n")


def role_main_cf(directory, *names, **variables):
    """{name: value} of the role's main.cf as Postfix's postconf reads it ($names expanded).

    Postfix's own parser, with the role's master.cf beside it: a parameter
    this Postfix does not know is an "unused parameter" warning, and fails.
    """
    rendered(directory, "main.cf", **variables)
    rendered(directory, "master.cf", **variables)
    warnings = subprocess.run(["postconf", "-c", str(directory), "-n"], capture_output=True,
                              text=True, check=True).stderr
    assert warnings == "", warnings
    lines = subprocess.run(["postconf", "-c", str(directory), "-x", *names],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    return {name: value.strip() for name, _, value in (line.partition(" =") for line in lines)}


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


def test_only_crlf_dot_crlf_ends_a_message_for_every_client_loopback_too(tmp_path):
    """CVE-2023-51764: the role's answer to SMTP smuggling on Debian 12 and 13 alike
    (what it does to a smuggling sender: tests/test_smuggling.py)."""
    settings = role_main_cf(tmp_path, "smtpd_forbid_bare_newline",
                            "smtpd_forbid_bare_newline_exclusions", "mynetworks")
    assert settings == {"smtpd_forbid_bare_newline": "normalize",
                        "smtpd_forbid_bare_newline_exclusions": "",
                        "mynetworks": "127.0.0.0/8 [::1]/128"}


def test_trusted_relays_are_exempt_from_postscreen_and_anvil_and_from_nothing_else(tmp_path):
    """A known relay skips postscreen's tests and the rate limits, never the relay check."""
    trusted = ["198.51.100.0/24", "2001:db8:7::/48", "192.0.2.10"]
    settings = role_main_cf(tmp_path, "smtpd_client_event_limit_exceptions",
                            "postscreen_access_list", "mynetworks", "smtpd_relay_restrictions",
                            "postscreen_client_connection_count_limit",
                            swiftdrop_trusted_networks=trusted)
    assert settings == {
        "smtpd_client_event_limit_exceptions":
            "127.0.0.0/8, [::1]/128, 198.51.100.0/24, [2001:db8:7::]/48, 192.0.2.10",
        "postscreen_access_list": "permit_mynetworks, cidr:/etc/postfix/postscreen_trusted.cidr",
        "mynetworks": "127.0.0.0/8 [::1]/128",
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        # counted before the access list: left to smtpd's anvil, which has the exceptions
        "postscreen_client_connection_count_limit": "0"}
    rendered(tmp_path, "postscreen_trusted.cidr", swiftdrop_trusted_networks=trusted)
    table = tmp_path / "postscreen_trusted.cidr"

    def looked_up(address):  # Postfix's own cidr table reader
        result = subprocess.run(["postmap", "-c", str(tmp_path), "-q", address, f"cidr:{table}"],
                                capture_output=True, text=True, check=False)
        assert result.stderr == "", result.stderr
        return result.stdout.strip() or None

    assert [looked_up(address) for address in
            ("198.51.100.200", "2001:db8:7:1::25", "192.0.2.10", "192.0.2.11", "203.0.113.5")
            ] == ["permit", "permit", "permit", None, None]


def test_without_trusted_relays_only_loopback_is_exempt(tmp_path):
    settings = role_main_cf(tmp_path, "smtpd_client_event_limit_exceptions",
                            "postscreen_client_connection_count_limit")
    assert settings == {"smtpd_client_event_limit_exceptions": "127.0.0.0/8, [::1]/128",
                        "postscreen_client_connection_count_limit": "20"}
    table = rendered(tmp_path, "postscreen_trusted.cidr")
    assert [line for line in table.splitlines() if line and not line.startswith("#")] == []
