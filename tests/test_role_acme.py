"""The role's ACME pieces (tasks/acme.yml): its checks, lego's command, the deploy hook.

Rendered and validated by Ansible itself on the controller. The deploy hook
runs for real, in a mount namespace of its own whose /etc/postfix is the
test's directory. Issuance and renewal against a real ACME server (pebble),
with mail flowing through the reload, are in molecule/acme.
"""

import os
import shlex
import subprocess

import pytest

from tests.support.role import rendered, validate
from tests.test_role_postfix import role_main_cf

ACME = {"swiftdrop_tls_acme": True, "swiftdrop_tls_acme_email": "postmaster@example.test"}
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def lego_arguments(script):
    """The arguments of the lego script's `set --` line, as sh splits them."""
    joined = script.split("set -- ", 1)[1].split("\nif ", 1)[0].replace("\\\n", " ")
    return shlex.split(joined)


def test_acme_with_an_email_passes(tmp_path):
    passed, output = validate(tmp_path, **ACME)
    assert passed, output


@pytest.mark.parametrize("variables", [
    {"swiftdrop_tls_certificate": PEM},
    {"swiftdrop_tls_acme_email": ""},
    {"swiftdrop_tls_acme_email": "postmaster"},
    {"swiftdrop_tls_acme_directory": "http://acme.example.test/directory"},
    {"swiftdrop_tls_acme_renew_days": 0},
])
def test_a_given_certificate_no_email_or_no_https_directory_stops_the_play(tmp_path, variables):
    passed, output = validate(tmp_path, **{**ACME, **variables})
    assert not passed
    assert "swiftdrop_tls_acme: needs swiftdrop_tls_acme_email" in output


def test_a_given_certificate_without_acme_passes(tmp_path):
    passed, output = validate(tmp_path, swiftdrop_tls_certificate=PEM,
                              swiftdrop_tls_private_key="k")
    assert passed, output


def test_dns_01_needs_a_provider(tmp_path):
    passed, output = validate(tmp_path, **ACME, swiftdrop_tls_acme_challenge="dns-01")
    assert not passed
    assert "dns-01 needs swiftdrop_tls_acme_dns_provider" in output
    passed, output = validate(tmp_path, **ACME, swiftdrop_tls_acme_challenge="dns-01",
                              swiftdrop_tls_acme_dns_provider="rfc2136")
    assert passed, output


def test_a_ca_bundle_that_is_not_pem_stops_the_play(tmp_path):
    passed, output = validate(tmp_path, **ACME, swiftdrop_tls_acme_ca_bundle="not a certificate")
    assert not passed
    assert "swiftdrop_tls_acme_ca_bundle: needs PEM certificates" in output


def test_http_01_gets_myhostname_on_port_80_and_renews_with_the_hook(tmp_path):
    script = rendered(tmp_path, "swiftdrop-acme", **ACME, swiftdrop_tls_acme_renew_days=20)
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    arguments = lego_arguments(script)
    assert arguments == ["--path", "/var/lib/swiftdrop-acme", "--accept-tos",
                         "--email", "postmaster@example.test",
                         "--server", "https://acme-v02.api.letsencrypt.org/directory",
                         "--domains", "mx.example.test", "--http", "--http.port", ":80"]
    assert ('lego "$@" renew --days 20 --no-random-sleep \\\n'
            "        --renew-hook /usr/local/lib/swiftdrop-acme/deploy") in script
    assert 'lego "$@" run --run-hook /usr/local/lib/swiftdrop-acme/deploy' in script
    assert "[ -e /var/lib/swiftdrop-acme/certificates/mx.example.test.crt ]" in script


def test_dns_01_uses_the_provider_and_no_port(tmp_path):
    script = rendered(tmp_path, "swiftdrop-acme", **ACME, swiftdrop_tls_acme_challenge="dns-01",
                      swiftdrop_tls_acme_dns_provider="rfc2136")
    arguments = lego_arguments(script)
    assert arguments[-2:] == ["--dns", "rfc2136"]
    assert "--http" not in arguments


def test_the_environment_file_holds_the_ca_bundle_and_the_dns_credentials(tmp_path):
    environment = rendered(tmp_path, "swiftdrop-acme.env", **ACME, swiftdrop_tls_acme_ca_bundle=PEM,
                           swiftdrop_tls_acme_dns_environment={"RFC2136_TSIG_SECRET": 's3"cr$t',
                                                               "RFC2136_NAMESERVER": "192.0.2.53"})
    settings = [line for line in environment.splitlines() if line and not line.startswith("#")]
    assert settings == ["LEGO_CA_CERTIFICATES=/etc/swiftdrop/acme-ca.pem",
                        'RFC2136_NAMESERVER="192.0.2.53"', 'RFC2136_TSIG_SECRET="s3\\"cr$t"']
    without = rendered(tmp_path, "swiftdrop-acme.env", **ACME)
    assert [line for line in without.splitlines() if line and not line.startswith("#")] == []


def test_the_timer_is_daily_spread_over_hours_and_catches_up(tmp_path):
    timer = rendered(tmp_path, "swiftdrop-acme.timer", **ACME)
    assert "OnCalendar=daily\n" in timer
    assert "RandomizedDelaySec=6h\n" in timer
    assert "Persistent=true\n" in timer


def test_postfix_reads_the_single_chain_file_with_acme_and_the_pair_without(tmp_path):
    with_acme = tmp_path / "acme"
    with_acme.mkdir()
    assert role_main_cf(with_acme, "smtpd_tls_chain_files", **ACME) == {
        "smtpd_tls_chain_files": "/etc/postfix/tls/chain.pem"}
    assert role_main_cf(tmp_path, "smtpd_tls_chain_files") == {
        "smtpd_tls_chain_files": "/etc/postfix/tls/key.pem, /etc/postfix/tls/cert.pem"}


@pytest.fixture
def issued(tmp_path):
    """A key and certificate as lego leaves them, and an /etc/postfix for the hook."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                    "-subj", "/CN=mx.example.test",
                    "-keyout", tmp_path / "lego.key", "-out", tmp_path / "lego.crt"],
                   capture_output=True, check=True)
    (tmp_path / "postfix/tls").mkdir(parents=True)
    (tmp_path / "deploy").write_text(rendered(tmp_path, "swiftdrop-acme-deploy", **ACME))
    return tmp_path


def run_hook(directory):
    """The hook as lego runs it, the test's directory as /etc/postfix (no Postfix runs there)."""
    script = f"mount --bind {directory}/postfix /etc/postfix && exec sh {directory}/deploy"
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                               "LEGO_CERT_PATH": str(directory / "lego.crt"),
                               "LEGO_CERT_KEY_PATH": str(directory / "lego.key")},
                          capture_output=True, text=True, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="a mount namespace needs root")
def test_the_hook_installs_key_and_chain_with_tls_yml_modes_and_no_leftovers(issued):
    result = run_hook(issued)
    assert result.returncode == 0, result.stderr
    tls = issued / "postfix/tls"
    key, certificate = (issued / "lego.key").read_bytes(), (issued / "lego.crt").read_bytes()
    assert (tls / "chain.pem").read_bytes() == key + certificate
    assert (tls / "key.pem").read_bytes() == key
    assert (tls / "cert.pem").read_bytes() == certificate
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in tls.iterdir()}
    assert modes == {"chain.pem": "0o600", "key.pem": "0o600", "cert.pem": "0o644"}


@pytest.mark.skipif(os.geteuid() != 0, reason="a mount namespace needs root")
def test_the_hook_replaces_the_chain_by_a_rename_so_a_reader_sees_old_or_new(issued):
    chain = issued / "postfix/tls/chain.pem"
    chain.write_text("old key\nold certificate\n")
    with chain.open() as reader_before:
        result = run_hook(issued)
        assert result.returncode == 0, result.stderr
        assert reader_before.read() == "old key\nold certificate\n"  # never written in place
    assert chain.read_bytes().startswith((issued / "lego.key").read_bytes())
