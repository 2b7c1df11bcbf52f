"""Which keystoneauth1 plugin an account gets: the choices swiftclient used to make.

Pure logic on real keystoneauth1 plugin objects (nothing is sent); the
Keystone v3 path runs end to end in test_keystone.py and
test_keystone_faults.py. Keystone v2 has no test server here, so its
plugin is checked this way only.
"""

from keystoneauth1.identity import v2, v3
import pytest

from swiftdrop.auth import auth_plugin, versioned_auth_url
from swiftdrop.config import Account
from swiftdrop.failures import StoreError
from swiftdrop.libraries import keystone


def account(auth_version, user="mail", tenant_name=None, **options):
    return Account(authurl="https://keystone.example.com:5000", user=user, key="secret",
                   auth_version=auth_version, tenant_name=tenant_name,
                   os_options=tuple(options.items()))


def plugin(**kwargs):
    _, identity = keystone()
    return auth_plugin(account(**kwargs), identity)


@pytest.mark.parametrize(("url", "version", "expected"), [
    ("https://k:5000", "3", "https://k:5000/v3"),
    ("https://k:5000/", "2.0", "https://k:5000/v2.0"),
    ("https://k:5000/v3/", "3", "https://k:5000/v3"),
    ("https://k:5000/v2.0", "2.0", "https://k:5000/v2.0"),
])
def test_a_versionless_auth_url_gets_the_version_as_swiftclient_added_it(url, version, expected):
    assert versioned_auth_url(url, version) == expected


def test_v3_password_with_project_and_domains():
    chosen = plugin(auth_version="3", project_name="mailproject",
                    user_domain_name="Mail", project_domain_name="Mail")
    assert isinstance(chosen, v3.Password)
    assert chosen.auth_url == "https://keystone.example.com:5000/v3"
    assert (chosen.project_name, chosen.project_domain_name) == ("mailproject", "Mail")
    [method] = chosen.auth_methods
    assert (method.username, method.password, method.user_domain_name) == \
        ("mail", "secret", "Mail")


def test_v3_takes_the_ini_tenant_name_as_its_project():
    chosen = plugin(auth_version="3", tenant_name="legacy", user_domain_name="Default",
                    project_domain_name="Default")
    assert chosen.project_name == "legacy"


def test_v2_password_with_tenant_from_tenant_colon_user():
    chosen = plugin(auth_version="2.0", user="mailtenant:mail")
    assert isinstance(chosen, v2.Password)
    assert chosen.auth_url == "https://keystone.example.com:5000/v2.0"
    assert (chosen.tenant_name, chosen.username) == ("mailtenant", "mail")


def test_application_credential_needs_no_project():
    chosen = plugin(auth_version="3", auth_type="v3applicationcredential",
                    application_credential_id="id", application_credential_secret="s")
    assert isinstance(chosen, v3.ApplicationCredential)


def test_a_password_account_without_project_is_refused_for_good():
    with pytest.raises(StoreError) as refused:
        plugin(auth_version="3", user_domain_name="Default")
    assert refused.value.permanent
    assert "no project" in refused.value.reason
