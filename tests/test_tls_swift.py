"""Verified TLS to Swift: a real Swift behind a real TLS terminator (stunnel4).

A message is stored only over a connection whose certificate the filter
trusts: the destination's ``cacert``, or else the system CA store that
Debian's ``ca-certificates`` maintains. Anything else is a 451 whose journal
entry names the server and OpenSSL's reason.
"""

import shutil
import subprocess

import pytest
import swiftclient

from tests.support.filterproc import FULL_REPLY, FilterProcess, run_swiftdrop
from tests.support.keystone import KeystoneServer
from tests.support.ports import reserve_port
from tests.support.swiftserver import SwiftServer
from tests.support.tlsfront import TestCA, TLSFront
from tests.test_keystone import write_keystone_ini
from tests.test_service import failure_journal_entry, send, stored_location

CONTAINER = "tls"
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
UNKNOWN_CA = "unable to get local issuer certificate"
WRONG_NAME = "hostname '127.0.0.1' doesn't match 'swift.example.com'"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def ca(workdir):
    return TestCA(workdir / "ca")


@pytest.fixture(scope="module")
def tls_swift(workdir):
    """A Swift that knows it sits behind TLS: tempauth hands out https storage URLs."""
    with SwiftServer(workdir / "swift", storage_url_scheme="https") as server:
        yield server


@pytest.fixture(scope="module")
def front(tls_swift, ca, workdir):
    """The terminator with a certificate for 127.0.0.1 and localhost, signed by `ca`."""
    cert, key = ca.issue("swift", "IP:127.0.0.1", "DNS:localhost")
    with TLSFront(workdir, tls_swift.port, cert, key) as terminator:
        connection(terminator, ca).put_container(CONTAINER)
        yield terminator


@pytest.fixture(scope="module")
def wrong_name_front(tls_swift, ca, workdir):
    """Same CA, but the certificate is for another host than the one the filter dials."""
    cert, key = ca.issue("elsewhere", "DNS:swift.example.com")
    with TLSFront(workdir, tls_swift.port, cert, key) as terminator:
        yield terminator


def connection(terminator, ca):
    return swiftclient.Connection(authurl=f"{terminator.url}/auth/v1.0", user="test:tester",
                                  key="testing", auth_version="1", cacert=str(ca.cert),
                                  retries=0)


def write_tls_ini(path, terminator, **keys):
    """A one-destination ini whose Swift is only reachable through `terminator`."""
    settings = {"recipient": "DEFAULT", "container": CONTAINER, "auth_version": "1",
                "authurl": f"{terminator.url}/auth/v1.0", "user": "test:tester",
                "key": "testing", "timeout": "5", **keys}
    path.write_text("[DEFAULT]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    path.chmod(0o640)
    return path


def object_names(terminator, ca):
    return {item["name"] for item in connection(terminator, ca).get_container(CONTAINER)[1]}


@pytest.mark.parametrize("trust", ["cacert", "insecure"])
def test_a_trusted_certificate_stores_the_message(front, ca, tmp_path, trust):
    keys = {"cacert": str(ca.cert)} if trust == "cacert" else {"insecure": "true"}
    ini = write_tls_ini(tmp_path / "swiftdrop.ini", front, **keys)
    body = f"Subject: over TLS with {trust}\r\n\r\nsealed\r\n".encode()
    with FilterProcess(ini, tmp_path, "--log-target", "stderr", *FULL_REPLY) as process:
        container, name = stored_location(send(process.address, "s@o.test",
                                               ["a@example.com"], body))
    assert container == CONTAINER
    assert connection(front, ca).get_object(CONTAINER, name)[1] == body



def test_a_swift_unaware_of_its_terminator_works_with_object_storage_url(swift, ca, tmp_path):
    """The shared test Swift hands out http URLs; os_options_object_storage_url overrides them.

    The same setup as in the Molecule guest: stunnel4 in front of an unchanged Swift.
    """
    cert, key = ca.issue("shared", "IP:127.0.0.1")
    body = b"through the shared Swift's terminator\r\n"
    with TLSFront(tmp_path, swift.port, cert, key) as terminator:
        swift.connection().put_container(CONTAINER)
        ini = write_tls_ini(tmp_path / "swiftdrop.ini", terminator, cacert=str(ca.cert),
                            os_options_object_storage_url=f"{terminator.url}/v1/AUTH_test")
        with FilterProcess(ini, tmp_path, "--log-target", "stderr", *FULL_REPLY) as process:
            _, name = stored_location(send(process.address, "s@o.test", ["a@example.com"], body))
    assert swift.connection().get_object(CONTAINER, name)[1] == body

@pytest.mark.parametrize("untrusted", [
    ("front", {}, UNKNOWN_CA),
    ("wrong_name_front", {"cacert": "CA"}, WRONG_NAME),
], ids=["ca-not-trusted", "wrong-host-name"])
def test_an_untrusted_certificate_is_a_451_whose_journal_entry_says_why(
        request, ca, tmp_path, journald, untrusted):
    terminator, keys, reason = untrusted
    dialled, front = request.getfixturevalue(terminator), request.getfixturevalue("front")
    keys = {key: str(ca.cert) for key in keys}
    ini = write_tls_ini(tmp_path / "swiftdrop.ini", dialled, **keys)
    before = object_names(front, ca)
    entry, process = failure_journal_entry(ini, tmp_path, journald, b"refused\r\n")
    assert f"TLS certificate of {dialled.url} not trusted: {reason}" in entry["MESSAGE"]
    # Certificates do not heal in a second: one attempt, no retry warnings.
    warnings = journald.of_process(process, timeout=0, PRIORITY="4")
    assert not [w for w in warnings if "attempt 1 failed" in w["MESSAGE"]]
    assert object_names(front, ca) == before


def private_system_store(ca, directory):
    """The system store as Debian builds it, plus `ca` as a local CA: in `directory` only.

    update-ca-certificates is told to read the local CAs from and write the
    bundle to our directories, so the machine's own store stays untouched.
    """
    local, certs, hooks = (directory / name for name in ("local", "certs", "hooks"))
    for each in (local, certs, hooks):
        each.mkdir(parents=True)
    shutil.copy(ca.cert, local / "swiftdrop-test-ca.crt")
    subprocess.run(["update-ca-certificates", "--fresh", "--localcertsdir", str(local),
                    "--etccertsdir", str(certs), "--hooksdir", str(hooks)],
                   check=True, capture_output=True)
    bundle = certs / "ca-certificates.crt"
    assert ca.cert.read_text().strip() in bundle.read_text()
    return bundle


def mount_namespaces_work():
    probe = subprocess.run(["unshare", "--mount", "true"], check=False, capture_output=True)
    return probe.returncode == 0


def test_the_system_store_is_the_default(front, ca, tmp_path, monkeypatch):
    """No cacert, no environment: the filter trusts what /etc/ssl/certs/ca-certificates.crt holds.

    The filter runs in its own mount namespace in which that path is a store
    built by update-ca-certificates with the test CA added, as an operator
    would add a private CA (/usr/local/share/ca-certificates).
    """
    if not mount_namespaces_work():
        pytest.skip("needs unshare --mount (root)")
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(variable, raising=False)
    bundle = private_system_store(ca, tmp_path / "store")
    ini = write_tls_ini(tmp_path / "swiftdrop.ini", front)
    port = reserve_port()
    with_store = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                  f'mount --bind "$0" {SYSTEM_BUNDLE} && exec "$@"', str(bundle)]
    with FilterProcess(ini, tmp_path, "--listen", f"127.0.0.1:{port}",
                       "--log-target", "stderr", *FULL_REPLY,
                       port=port, launcher=with_store) as process:
        _, name = stored_location(send(process.address, "s@o.test", ["a@example.com"],
                                       b"trusted by the system store\r\n"))
    assert name in object_names(front, ca)


def test_requests_ca_bundle_replaces_the_system_store(front, ca, tmp_path, monkeypatch):
    """What requests honours instead of the default path (not SSL_CERT_FILE)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(private_system_store(ca, tmp_path / "store")))
    ini = write_tls_ini(tmp_path / "swiftdrop.ini", front)
    with FilterProcess(ini, tmp_path, "--log-target", "stderr", *FULL_REPLY) as process:
        _, name = stored_location(send(process.address, "s@o.test", ["a@example.com"],
                                       b"trusted through REQUESTS_CA_BUNDLE\r\n"))
    assert name in object_names(front, ca)


def test_check_names_the_untrusted_server_and_fails(front, ca, tmp_path):
    untrusted = write_tls_ini(tmp_path / "untrusted.ini", front)
    result = run_swiftdrop("check", "--config", str(untrusted))
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL [DEFAULT]")
    assert f"TLS certificate of {front.url} not trusted: {UNKNOWN_CA}" in result.stdout
    trusted = write_tls_ini(tmp_path / "trusted.ini", front, cacert=str(ca.cert))
    result = run_swiftdrop("check", "--config", str(trusted))
    assert (result.returncode, result.stdout[:4]) == (0, "ok  "), result.stdout + result.stderr



@pytest.fixture(scope="module")
def keystone_behind_tls(ca, workdir):
    """Keystone behind its own terminator; the Swift in its catalog is plain http."""
    cert, key = ca.issue("keystone", "IP:127.0.0.1")
    with (KeystoneServer(workdir / "keystone") as keystone,
          SwiftServer(workdir / "keystone-swift", keystone=keystone),
          TLSFront(workdir, keystone.port, cert, key) as terminator):
        yield keystone, terminator


@pytest.mark.slow  # a real Keystone
def test_keystone_authentication_is_verified_too(keystone_behind_tls, ca, tmp_path):
    keystone, terminator = keystone_behind_tls
    ini = write_keystone_ini(tmp_path / "swiftdrop.ini", keystone)
    untrusted = ini.read_text().replace(keystone.auth_url, f"{terminator.url}/v3")
    ini.write_text(untrusted + f"cacert = {ca.cert}\n")
    check = run_swiftdrop("check", "--config", str(ini))
    assert check.returncode == 0, check.stdout + check.stderr
    ini.write_text(untrusted)
    with FilterProcess(ini, tmp_path, "--log-target", "stderr", *FULL_REPLY) as process:
        code, _ = send(process.address, "s@o.test", ["a@example.com"], b"refused\r\n")
    assert code == 451
    assert f"TLS certificate of {terminator.url} not trusted: {UNKNOWN_CA}" in process.log()
