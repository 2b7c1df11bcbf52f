"""Per-message locks for queue consumers, with a lease that runs out if the holder dies.

Two kinds, chosen per destination with ``queue_lock``:

``swift`` (default)
    A lock object ``locks/<name>`` in the queue's own container, created
    with ``If-None-Match: *`` (fails with 412 while another holder's object
    exists) and ``X-Delete-After`` (Swift stops serving it when the lease
    ends, and lets the next ``If-None-Match: *`` PUT through). It needs no
    other service. On a single-replica or quorum-consistent Swift it
    excludes; on an eventually consistent multi-replica cluster two PUTs
    racing on different primaries can both get 201, so after creating it we
    read it back and proceed only if it holds our token. That narrows the
    race but cannot close it: where a message must never be processed
    twice, use ``redis``.

``redis``
    ``SET key token NX PX lease`` on a Redis server; refresh and release
    are Lua scripts that act only if the key still holds our token, so a
    holder whose lease ran out can never release a lock someone else took.
"""

import secrets
import time

from .libraries import ClientException

LOCK_PREFIX = "locks/"
# Our own clock must run out before Swift's: the lease is counted from just
# before the request was sent, and with this much to spare.
LEASE_MARGIN = 0.5


class SwiftLock:
    """Lock objects with a lease in the queue's container.

    While our lease runs by our own clock, the lock object can only be ours
    (Swift lets no other PUT through while it exists), so refresh and release
    then skip reading it back; only a holder that may have run over its lease
    asks Swift whose it is first. Bodies are str: swiftclient can resend a
    str after a broken connection, but not bytes.
    """

    errors = ()  # what its requests raise beyond Swift's own errors: nothing

    def __init__(self, connection, container):
        self.connection = connection
        self.container = container
        self._ours_until = {}  # (name, token) -> monotonic time our lease surely lasts

    def _path(self, name):
        return f"{LOCK_PREFIX}{name}"

    def _holder(self, name):
        try:
            return self.connection.get_object(self.container, self._path(name))[1].decode()
        except ClientException as error:
            if error.http_status == 404:
                return None
            raise

    def _surely_ours(self, name, token):
        return time.monotonic() < self._ours_until.get((name, token), 0)

    def _leased(self, name, token, lease, sent):
        # X-Delete-After takes whole seconds: what Swift was told is what counts.
        self._ours_until[(name, token)] = sent + int(lease) - LEASE_MARGIN

    def acquire(self, name, lease):
        """Return a token if we now hold `name`'s lock for `lease` seconds, else None."""
        token = secrets.token_hex(16)
        sent = time.monotonic()
        try:
            self.connection.put_object(
                self.container, self._path(name), token,
                headers={"If-None-Match": "*", "X-Delete-After": str(int(lease))})
        except ClientException as error:
            if error.http_status == 412:
                return None
            raise
        if self._holder(name) != token:
            return None
        self._leased(name, token, lease, sent)
        return token

    def refresh(self, name, token, lease):
        """Extend our lease; False if the lock is no longer ours."""
        if not self.holds(name, token):
            return False
        sent = time.monotonic()
        self.connection.post_object(self.container, self._path(name),
                                    headers={"X-Delete-After": str(int(lease))})
        self._leased(name, token, lease, sent)
        return True

    def holds(self, name, token):
        """Whether the lock is still ours: free while our lease surely runs."""
        return self._surely_ours(name, token) or self._holder(name) == token

    def release(self, name, token):
        ours = self.holds(name, token)
        self._ours_until.pop((name, token), None)
        if not ours:
            return
        try:
            self.connection.delete_object(self.container, self._path(name))
        except ClientException as error:
            if error.http_status != 404:
                raise


_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RedisLock:
    """Strict locks in Redis for sites that cannot accept the Swift lock's race."""

    def __init__(self, url, namespace):
        import redis  # noqa: PLC0415 - only sites with queue_lock = redis need it

        self.client = redis.Redis.from_url(url)
        self.errors = (redis.RedisError,)  # Redis away: a worker waits and tries again
        self.namespace = namespace
        self._refresh = self.client.register_script(_REFRESH)
        self._release = self.client.register_script(_RELEASE)

    def _key(self, name):
        return f"swiftdrop:{self.namespace}:{name}"

    def acquire(self, name, lease):
        token = secrets.token_hex(16)
        if self.client.set(self._key(name), token, nx=True, px=int(lease * 1000)):
            return token
        return None

    def holds(self, name, token):
        return self.client.get(self._key(name)) == token.encode()

    def refresh(self, name, token, lease):
        return bool(self._refresh(keys=[self._key(name)], args=[token, int(lease * 1000)]))

    def release(self, name, token):
        self._release(keys=[self._key(name)], args=[token])


def make_lock(settings, connection, container, namespace):
    """The lock kind the destination's queue settings ask for."""
    if settings.lock == "redis":
        return RedisLock(settings.redis_url, namespace)
    return SwiftLock(connection, container)
