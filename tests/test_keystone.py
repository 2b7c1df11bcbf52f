"""SwiftDrop against Swift behind a real Keystone (identity v3).

Production deployments use ``auth_version = 3`` with ``os_options_*``
project and domain names; these tests run that path end to end: Keystone
issues the token, Swift's authtoken middleware validates it with Keystone,
keystoneauth maps the project to account ``AUTH_<project id>``.
"""

import smtplib
import time

import pytest
from swiftclient import client

from tests.support.filterproc import FilterProcess, run_swiftdrop
from tests.support.keystone import KeystoneServer
from tests.support.swiftserver import SwiftServer

# swiftclient's auth v3 still uses keystoneclient's deprecated session-less API.
# A real Keystone takes a while to start: left out of the quick loop.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:keystoneclient"),
    pytest.mark.filterwarnings("ignore:Using the 'tenant_id' argument:DeprecationWarning"),
]

CONTAINER = "keystone-mail"
MESSAGE = b"Subject: x\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def keystone(tmp_path_factory):
    started = time.monotonic()
    with KeystoneServer(tmp_path_factory.mktemp("keystone")) as server:
        print(f"keystone startup (incl. users) took {time.monotonic() - started:.2f} s")
        yield server


@pytest.fixture(scope="module")
def keystone_swift(keystone, tmp_path_factory):
    started = time.monotonic()
    with SwiftServer(tmp_path_factory.mktemp("swift"), keystone=keystone) as server:
        print(f"keystone-mode swift startup took {time.monotonic() - started:.2f} s")
        yield server


def get_auth(keystone):
    """What SwiftDrop does once per account: a v3 password auth, project-scoped."""
    mail = keystone.mail
    return client.get_auth(
        keystone.auth_url, mail.user, mail.password, auth_version="3",
        os_options={"project_name": mail.project, "project_domain_name": mail.domain,
                    "user_domain_name": mail.domain})


def test_swiftclient_v3_roundtrip(keystone, keystone_swift):
    conn = client.Connection(
        authurl=keystone.auth_url, user="mailuser", key=keystone.mail.password,
        auth_version="3", retries=0,
        os_options={"project_name": "mailproject", "project_domain_name": "Default",
                    "user_domain_name": "Default"})
    conn.put_container("roundtrip")
    conn.put_object("roundtrip", "obj", b"hello keystone")
    assert conn.get_object("roundtrip", "obj")[1] == b"hello keystone"
    project_id = keystone.admin_client().projects.find(name="mailproject").id
    assert conn.url == f"http://127.0.0.1:{keystone_swift.port}/v1/AUTH_{project_id}"


def test_wrong_password_and_foreign_token_are_refused(keystone, keystone_swift):
    with pytest.raises(client.ClientException) as error:
        client.get_auth(keystone.auth_url, "mailuser", "wrong", auth_version="3",
                        os_options={"project_name": "mailproject",
                                    "project_domain_name": "Default",
                                    "user_domain_name": "Default"})
    assert "Unauthorized" in str(error.value)  # swiftclient drops keystone's 401
    url, _ = get_auth(keystone)
    with pytest.raises(client.ClientException) as error:
        client.head_account(url, "not-a-keystone-token")
    assert error.value.http_status == 401


def write_keystone_ini(path, keystone):
    mail = keystone.mail
    path.write_text(
        "[DEFAULT]\n"
        "recipient = DEFAULT\n"
        f"container = {CONTAINER}\n"
        "auth_version = 3\n"
        f"authurl = {keystone.auth_url}\n"
        f"user = {mail.user}\n"
        f"key = {mail.password}\n"
        f"os_options_project_name = {mail.project}\n"
        f"os_options_project_domain_name = {mail.domain}\n"
        f"os_options_user_domain_name = {mail.domain}\n"
        "create_container = true\n")
    path.chmod(0o640)
    return path


def test_filter_end_to_end_with_keystone(keystone, keystone_swift, tmp_path):
    ini = write_keystone_ini(tmp_path / "swiftdrop.ini", keystone)
    check = run_swiftdrop("check", "--config", str(ini))
    assert check.returncode == 0, check.stdout + check.stderr

    started = time.monotonic()
    get_auth(keystone)
    auth_time = time.monotonic() - started

    count = 10
    with FilterProcess(ini, tmp_path, "--log-target", "stderr") as proc:
        with smtplib.SMTP(*proc.address, timeout=30) as smtp:
            smtp.sendmail("s@o.test", ["a@example.com"], MESSAGE)  # authenticates
            started = time.monotonic()
            for _ in range(count - 1):
                smtp.sendmail("s@o.test", ["a@example.com"], MESSAGE)
            per_message = (time.monotonic() - started) / (count - 1)
    log = proc.log()
    print(f"keystone auth (get_auth) {auth_time * 1000:.0f} ms, "
          f"per message after auth {per_message * 1000:.1f} ms")

    conn = keystone_swift.connection(retries=0)
    names = [item["name"] for item in conn.get_container(CONTAINER, full_listing=True)[1]]
    assert len(names) == count, log
    for name in names:
        assert conn.get_object(CONTAINER, name)[1] == MESSAGE
    authenticated = [line for line in log.splitlines()
                     if "authenticated mailproject:mailuser" in line]
    assert len(authenticated) == 1, log
