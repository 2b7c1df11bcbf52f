"""One Swift connection per worker, and what a refusal of Swift's means to an operator."""

import re
from urllib.parse import unquote

from ..auth import authenticate
from ..libraries import ClientException, swift

# How swiftclient names a failed request: "Object PUT failed".
FAILED_REQUEST = re.compile(r"^(?:Account|Container|Object) ([A-Z]+) failed")


class AccountConnection(swift.Connection):
    """swiftclient's Connection, authenticated the way the filter does it (swiftdrop.auth).

    swiftclient's own Keystone path needs keystoneclient, which the queue
    tools must not pay for (swiftdrop.libraries). Given another
    connection's URL and token, it starts with them and authenticates
    itself only when the token runs out.
    """

    def __init__(self, account, preauthurl=None, preauthtoken=None, retries=None):
        super().__init__(authurl=account.authurl, user=account.user, key=account.key,
                         auth_version=account.auth_version, cacert=account.cacert,
                         insecure=account.insecure, timeout=account.timeout,
                         retries=account.retries if retries is None else retries,
                         preauthurl=preauthurl, preauthtoken=preauthtoken)
        self.account = account

    def get_auth(self):
        self.url, self.token = authenticate(self.account, self.timeout)
        return self.url, self.token


def connect(destination, preauthurl=None, preauthtoken=None, retries=None):
    """A swiftclient Connection for one destination's account (one per worker)."""
    return AccountConnection(destination.account, preauthurl, preauthtoken, retries)




def refusal(destination, error):
    """One line naming the right Swift refused this user (a 403), else None.

    Unlike Swift being away, a missing right does not pass by itself:
    someone has to grant it (docs/deployment.md says which).
    """
    if not isinstance(error, ClientException) or error.http_status != 403:
        return None
    container = destination.container
    failed = FAILED_REQUEST.match(error.msg or "")
    if failed is None:
        return f"Swift answered 403 Forbidden to {destination.account.describe()}"
    method = failed.group(1)
    target = unquote(error.http_path or "").partition(f"/{container}/")[2]
    right = "read" if method in ("GET", "HEAD") else "write to"
    return (f"Swift answered 403 Forbidden to {method} {target or container}: "
            f"{destination.account.describe()} may not {right} container {container}")
