"""Get a storage URL and token for an account, every request bounded by a timeout.

swiftclient's get_auth() does this for tempauth (v1) and Keystone passwords
(v2, v3), passing our timeout on. For ``auth_type = v3applicationcredential``
it builds a keystoneauth1 session *without* any timeout (and without our
cacert), so a Keystone that accepts connections and never answers would hold
the authentication forever; that path is done here with keystoneauth1
directly, with the timeout and TLS settings every other request has.
"""

from keystoneauth1 import session as keystone_session
from keystoneauth1.identity import v3 as keystone_v3
from swiftclient import client as swift

from .failures import StoreError


def authenticate(account, timeout):
    """(storage URL, token) for `account`; raises what the libraries raise."""
    options = dict(account.os_options)
    if account.auth_version == "3" and options.get("auth_type") == "v3applicationcredential":
        return _application_credential(account, options, timeout)
    return swift.get_auth(
        account.authurl, account.user, account.key, auth_version=account.auth_version,
        tenant_name=account.tenant_name, os_options=options, cacert=account.cacert,
        insecure=account.insecure, timeout=timeout)


def auth_server(account):
    """How reasons name the service that hands out tokens."""
    if account.auth_version == "1.0":
        return f"Swift's auth at {account.authurl}"
    return f"Keystone at {account.authurl}"


def _application_credential(account, options, timeout):
    auth_url = account.authurl.rstrip("/")
    if not auth_url.endswith("/v3"):
        auth_url += "/v3"  # as swiftclient treats a versionless URL
    plugin = keystone_v3.ApplicationCredential(
        auth_url=auth_url,
        application_credential_id=options.get("application_credential_id"),
        application_credential_secret=options.get("application_credential_secret"))
    verify = False if account.insecure else (account.cacert or True)
    session = keystone_session.Session(auth=plugin, verify=verify, timeout=timeout)
    token = session.get_token()
    url = options.get("object_storage_url") or session.get_endpoint(
        service_type=options.get("service_type") or "object-store",
        interface=options.get("interface") or options.get("endpoint_type") or "public",
        region_name=options.get("region_name"))
    if not url:
        raise StoreError(f"{auth_server(account)}: the catalog has no object-store endpoint",
                         permanent=True)
    return url, token
