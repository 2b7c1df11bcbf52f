"""Get a storage URL and token for an account, every request bounded by a timeout.

Tempauth (v1) goes through swiftclient's get_auth(), which passes our
timeout on. Keystone (v2, v3: passwords and application credentials) is
done here with keystoneauth1 directly, for two reasons: swiftclient's
v3applicationcredential path builds a session *without* any timeout (and
without our cacert), so a Keystone that accepts connections and never
answers would hold the authentication forever; and swiftclient's password
path needs keystoneclient, whose import costs every process 40 MB and half
a second (:mod:`swiftdrop.libraries`). keystoneauth1 is what keystoneclient
uses underneath, so the errors, and the reasons made of them, are the same.
"""

from .failures import StoreError
from .libraries import keystone, swift

# swiftclient's names for the catalog's interfaces are v2's (publicURL).
INTERFACES = {"publicURL": "public", "internalURL": "internal", "adminURL": "admin"}


def authenticate(account, timeout):
    """(storage URL, token) for `account`; raises what the libraries raise."""
    options = dict(account.os_options)
    if account.auth_version == "1.0":
        return swift.get_auth(account.authurl, account.user, account.key, auth_version="1.0",
                              os_options=options, cacert=account.cacert,
                              insecure=account.insecure, timeout=timeout)
    session = keystone_session(account, timeout)
    token = session.get_token()
    interface = options.get("interface") or options.get("endpoint_type") or "public"
    url = options.get("object_storage_url") or session.get_endpoint(
        service_type=options.get("service_type") or "object-store",
        interface=INTERFACES.get(interface, interface), region_name=options.get("region_name"))
    if not url:
        raise StoreError(f"{auth_server(account)}: the catalog has no object-store endpoint",
                         permanent=True)
    return url, token


def keystone_session(account, timeout):
    """A keystoneauth1 session for a v2/v3 account, its requests bounded by `timeout`."""
    session_module, identity = keystone()
    verify = False if account.insecure else (account.cacert or True)
    return session_module.Session(auth=auth_plugin(account, identity), verify=verify,
                                  timeout=timeout)


def auth_plugin(account, identity):
    """The keystoneauth1 auth plugin for the account, as swiftclient would choose it."""
    options = dict(account.os_options)
    user = account.user
    tenant = options.get("tenant_name") or account.tenant_name
    if user and ":" in user and not tenant and not options.get("project_name"):
        tenant, user = user.split(":", 1)  # swiftclient's "tenant:user" form
    auth_url = versioned_auth_url(account.authurl, account.auth_version)
    if account.auth_version == "3" and options.get("auth_type") == "v3applicationcredential":
        return identity.v3.ApplicationCredential(
            auth_url=auth_url,
            application_credential_id=options.get("application_credential_id"),
            application_credential_secret=options.get("application_credential_secret"))
    project_name = options.get("project_name") or tenant
    project_id = options.get("project_id") or options.get("tenant_id")
    if not (project_name or project_id):
        raise StoreError(f"{auth_server(account)}: no project (tenant) name or id configured",
                         permanent=True)
    if account.auth_version == "3":
        return identity.v3.Password(
            auth_url=auth_url, username=user, password=account.key,
            user_id=options.get("user_id"),
            user_domain_name=options.get("user_domain_name"),
            user_domain_id=options.get("user_domain_id"),
            project_name=project_name, project_id=project_id,
            project_domain_name=options.get("project_domain_name"),
            project_domain_id=options.get("project_domain_id"))
    return identity.v2.Password(auth_url=auth_url, username=user, password=account.key,
                                user_id=options.get("user_id"), tenant_name=project_name,
                                tenant_id=project_id)


def versioned_auth_url(auth_url, auth_version):
    """A versionless auth URL gets /v2.0 or /v3, as swiftclient treats it."""
    auth_url = auth_url.rstrip("/")
    if auth_url.rsplit("/", 1)[-1] in ("v2", "v2.0", "v3", "v3.0"):
        return auth_url
    return auth_url + ("/v3" if auth_version == "3" else "/v2.0")


def auth_server(account):
    """How reasons name the service that hands out tokens."""
    if account.auth_version == "1.0":
        return f"Swift's auth at {account.authurl}"
    return f"Keystone at {account.authurl}"
