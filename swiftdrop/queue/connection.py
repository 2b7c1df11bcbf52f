"""One Swift connection per worker, and what a refusal of Swift's means to an operator."""

import re
import threading
from urllib.parse import unquote

from ..auth import authenticate
from ..libraries import ClientException, swift

# How swiftclient names a failed request: "Object PUT failed".
FAILED_REQUEST = re.compile(r"^(?:Account|Container|Object) ([A-Z]+) failed")


class SharedToken:
    """One token for several connections of one account: a sharded queue's, one per shard.

    Without it each shard's connection would authenticate on its own: N
    tokens per worker loop, and with Keystone N authentications at start.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.url = self.token = None


class AccountConnection(swift.Connection):
    """swiftclient's Connection, authenticated the way the filter does it (swiftdrop.auth).

    swiftclient's own Keystone path needs keystoneclient, which the queue
    tools must not pay for (swiftdrop.libraries). Given another
    connection's URL and token, it starts with them and authenticates
    itself only when the token runs out. With a SharedToken it takes the
    token the others have, unless that is the one it was refused with.
    """

    def __init__(self, account, preauthurl=None, preauthtoken=None, retries=None,
                 shared=None):
        super().__init__(authurl=account.authurl, user=account.user, key=account.key,
                         auth_version=account.auth_version, cacert=account.cacert,
                         insecure=account.insecure, timeout=account.timeout,
                         retries=account.retries if retries is None else retries,
                         preauthurl=preauthurl, preauthtoken=preauthtoken)
        self.account = account
        self._shared = shared
        self._taken = None  # the shared token this connection used last

    def get_auth(self):
        shared = self._shared
        if shared is None:
            self.url, self.token = authenticate(self.account, self.timeout)
            return self.url, self.token
        with shared.lock:
            # Asked again for the token it already took: that one was refused (401).
            if shared.token is None or shared.token == self._taken:
                shared.url, shared.token = authenticate(self.account, self.timeout)
            self._taken = shared.token
            self.url, self.token = shared.url, shared.token
        return self.url, self.token


def connect(destination, preauthurl=None, preauthtoken=None, retries=None, shared=None):
    """A swiftclient Connection for one destination's account (one per worker)."""
    return AccountConnection(destination.account, preauthurl, preauthtoken, retries, shared)




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
