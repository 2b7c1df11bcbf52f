"""Per-message locks for queue consumers, with a lease that runs out if the holder dies.

Two kinds, chosen per destination with ``queue_lock``:

``swift`` (default)
    A lock object ``locks/<name>`` in the queue's own container, created
    with ``If-None-Match: *`` (fails with 412 while another holder's object
    exists) and ``X-Delete-After`` (Swift stops serving it when the lease
    ends, and lets the next ``If-None-Match: *`` PUT through). It needs no
    other service. After creating it we read it back and proceed only if it
    holds our token. ``If-None-Match`` is a check before a write, even on a
    single replica, and on an eventually consistent cluster two PUTs can land
    on different primaries: two workers can both get a 201. The read-back
    and the claim's own check (swiftdrop.queue) narrow that race but cannot
    close it: where a message must never be processed twice, use ``redis``.

``redis``
    ``SET key token NX PX lease`` on a Redis server; refresh and release
    are Lua scripts that act only if the key still holds our token, so a
    holder whose lease ran out can never release a lock someone else took.

Both note, per lock they hold, until when it is surely theirs by their own
clock (``remaining``), so that their holder asks the server only when it
cannot be sure (swiftdrop.lease has the rules).
"""

from dataclasses import dataclass
from email.utils import parsedate_to_datetime
import secrets
import threading
import time

from .lease import CLOCK_MARGIN, LEASE_MARGIN
from .libraries import ClientException

LOCK_PREFIX = "locks/"
# What Swift answers a conditional request on a lock that is not (or no longer) ours:
# 404 it ran out or is gone, 409 a newer lock object, 412 another expiry than ours.
NOT_OURS = (404, 409, 412)
# A release tries this often, reading the lock back between tries, before it
# leaves the lock to run out.
RELEASE_TRIES = 3
# Swift's Date header is in whole seconds, rounded down.
DATE_ROUNDING = 1.0
# Seconds a Redis request may take when no account timeout is given (swiftdrop.config's
# default Swift timeout).
REDIS_TIMEOUT = 10.0


@dataclass
class _Lease:
    """What a holder knows about one of its locks.

    The server's expiry is at least `lease` seconds after monotonic time
    `base` (for the Swift lock, less its rounding); `delete_at` is the Swift
    lock object's X-Delete-At as Swift stores it, None when a refresh that
    failed may have changed it.
    """

    base: float
    lease: int | float
    delete_at: str | None = None

    def remaining(self, margin):
        return self.base + self.lease - margin - time.monotonic()


class SwiftLock:
    """Lock objects with a lease in the queue's container.

    While our lease surely runs by our own clock, the lock object can only be
    ours (Swift lets no other PUT through while it exists), so refreshing and
    releasing it then skip reading it back. A refresh sets an absolute
    ``X-Delete-At`` (our last one plus the whole seconds since), so that we
    always know the value Swift holds, and a release deletes only with
    ``X-If-Delete-At`` of that value. Both go out on `lock_connection`, one
    without retries of its own: a POST or DELETE swiftclient sent again after
    a lost answer could reach the next holder's lock. Instead a refresh is
    only sent while our lease surely has `attempt_time` (that connection's
    timeout) left, so that it reaches Swift before our lock can be anyone
    else's, and a release whose answer was lost reads the lock back before it
    tries again. Bodies are str: swiftclient can resend a str after a broken
    connection, but not bytes.
    """

    errors = ()  # what its requests raise beyond Swift's own errors: nothing
    margin = LEASE_MARGIN

    def __init__(self, connection, container, *, lock_connection=None, attempt_time=None):
        self.connection = connection
        self.container = container
        # A callable giving the connection for POST and DELETE (made when first needed:
        # most claims never refresh), or None to use `connection` for them too.
        self._lock_connection = lock_connection
        self._made = None
        self.attempt_time = (attempt_time if attempt_time is not None
                             else getattr(connection, "timeout", None) or 0)
        self._leases = {}  # (name, token) -> _Lease
        # One refresh or release at a time: the heartbeat's and the holder's own.
        self._writing = threading.Lock()

    def _path(self, name):
        return f"{LOCK_PREFIX}{name}"

    def _writer(self):
        if self._lock_connection is None:
            return self.connection
        if self._made is None:
            self._made = self._lock_connection()
        return self._made

    def _read(self, name, connection=None):
        """(token, X-Delete-At, Date) of the lock object, or None if there is none."""
        try:
            headers, body = (connection or self.connection).get_object(
                self.container, self._path(name))
        except ClientException as error:
            if error.http_status == 404:
                return None
            raise
        return body.decode(), headers.get("x-delete-at"), headers.get("date")

    def _ask(self, name, token, lease, connection):
        """Read the lock back; note and return what we know if it is ours, else None.

        Swift's answer says when it was sent (Date, whole seconds, rounded
        down) and when the lock object ends (X-Delete-At): it lasts at least
        their difference less a second after we sent the GET.
        """
        sent = time.monotonic()
        holder = self._read(name, connection)
        if holder is None or holder[0] != token:
            self._leases.pop((name, token), None)
            return None
        _, delete_at, date = holder
        try:
            left = int(delete_at) - parsedate_to_datetime(date).timestamp() - DATE_ROUNDING
        except (TypeError, ValueError):
            left = 0.0  # no expiry or no date: nothing we can count on
        record = _Lease(sent + left - int(lease), int(lease), delete_at)
        self._leases[(name, token)] = record
        return record

    def remaining(self, name, token):
        """Seconds our lock surely lasts by our own clock (0 if we know of none)."""
        record = self._leases.get((name, token))
        return max(0.0, record.remaining(self.margin)) if record else 0.0

    def acquire(self, name, lease):
        """Return a token if we now hold `name`'s lock for `lease` seconds, else None."""
        lease = int(lease)
        token = secrets.token_hex(16)
        sent = time.monotonic()
        try:
            self.connection.put_object(
                self.container, self._path(name), token,
                headers={"If-None-Match": "*", "X-Delete-After": str(lease)})
        except ClientException as error:
            if error.http_status != 412:
                raise
            # Unless swiftclient tried again, it is someone else's. After a retry
            # the 412 may answer our own first attempt, stored although its answer
            # was lost: the read-back tells.
            if getattr(self.connection, "attempts", 1) <= 1:
                return None
        holder = self._read(name)
        if holder is None or holder[0] != token:
            return None
        self._leases[(name, token)] = _Lease(sent, lease, holder[1])
        return token

    def refresh(self, name, token, lease):
        """Extend our lease to about `lease` seconds from now; False if it is not ours (any more).

        Also False when it is ours but too close to its end to extend safely:
        the POST might only reach Swift after someone else has taken the lock.
        """
        with self._writing:
            connection = self._writer()
            key = (name, token)
            record = self._leases.get(key)
            if record is None or record.delete_at is None \
                    or record.remaining(self.margin) < self.attempt_time:
                record = self._ask(name, token, lease, connection)
                if record is None or record.remaining(self.margin) < self.attempt_time:
                    self._leases.pop(key, None)
                    return False
            step = int(time.monotonic() - record.base)
            if step < 1:
                return True
            delete_at = str(int(record.delete_at) + step)
            try:
                connection.post_object(self.container, self._path(name),
                                       headers={"X-Delete-At": delete_at})
            except ClientException as error:
                if error.http_status in NOT_OURS:
                    self._leases.pop(key, None)
                    return False
                record.delete_at = None  # Swift may or may not have taken it
                raise
            except BaseException:
                record.delete_at = None
                raise
            record.base += step
            record.delete_at = delete_at
            return True

    def holds(self, name, token):
        """Whether the lock is still ours: free while our lease surely runs."""
        if self.remaining(name, token) > 0:
            return True
        holder = self._read(name)
        return holder is not None and holder[0] == token

    def forget(self, name, token):
        """Stop counting on this lock; it runs out by itself."""
        self._leases.pop((name, token), None)

    def release(self, name, token):
        """Delete our lock object; another holder's is never touched."""
        with self._writing:
            connection = self._writer()
            record = self._leases.pop((name, token), None)
            delete_at = record.delete_at if record else None
            for tries in range(1, RELEASE_TRIES + 1):
                if delete_at is None:
                    holder = self._read(name)
                    if holder is None or holder[0] != token:
                        return
                    delete_at = holder[1]
                headers = {"X-If-Delete-At": delete_at} if delete_at else {}
                try:
                    connection.delete_object(self.container, self._path(name), headers=headers)
                    return
                except ClientException as error:
                    if error.http_status in NOT_OURS:
                        return
                    if tries == RELEASE_TRIES:
                        raise
                except Exception:
                    if tries == RELEASE_TRIES:
                        raise
                delete_at = None  # the answer was lost: was it deleted? Read it back first

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
    """Strict locks in Redis for sites that cannot accept the Swift lock's race.

    Redis excludes (one server, ``SET NX`` is atomic); what a lock cannot
    do, stop a holder frozen past its lease from acting afterwards, the
    queue's fence does at Swift (swiftdrop.queue.states.Claimed). A fencing
    counter kept in Redis would add nothing to that: Swift cannot check it,
    and a holder checking it itself checks before it acts, which is the very
    gap a freeze falls into. Every Redis request gives up after `timeout`
    seconds (the account's Swift timeout), so that a Redis that hangs makes
    a worker wait and try again rather than hang with it.
    """

    margin = CLOCK_MARGIN  # Redis counts the lease in milliseconds: no rounding to allow for

    def __init__(self, url, namespace, *, timeout=REDIS_TIMEOUT):
        import redis  # noqa: PLC0415 - only sites with queue_lock = redis need it

        self.client = redis.Redis.from_url(url, socket_timeout=timeout,
                                           socket_connect_timeout=timeout)
        self.errors = (redis.RedisError,)  # Redis away: a worker waits and tries again
        self.namespace = namespace
        self._refresh = self.client.register_script(_REFRESH)
        self._release = self.client.register_script(_RELEASE)
        self._leases = {}  # (name, token) -> _Lease

    def _key(self, name):
        return f"swiftdrop:{self.namespace}:{name}"

    def remaining(self, name, token):
        record = self._leases.get((name, token))
        return max(0.0, record.remaining(self.margin)) if record else 0.0

    def acquire(self, name, lease):
        token = secrets.token_hex(16)
        sent = time.monotonic()
        if self.client.set(self._key(name), token, nx=True, px=int(lease * 1000)):
            self._leases[(name, token)] = _Lease(sent, lease)
            return token
        return None

    def holds(self, name, token):
        return self.remaining(name, token) > 0 or \
            self.client.get(self._key(name)) == token.encode()

    def refresh(self, name, token, lease):
        sent = time.monotonic()
        if self._refresh(keys=[self._key(name)], args=[token, int(lease * 1000)]):
            self._leases[(name, token)] = _Lease(sent, lease)
            return True
        self._leases.pop((name, token), None)
        return False

    def forget(self, name, token):
        self._leases.pop((name, token), None)

    def release(self, name, token):
        self._leases.pop((name, token), None)
        self._release(keys=[self._key(name)], args=[token])


def make_lock(settings, connection, container, namespace, *, lock_connection=None,
              attempt_time=None):
    """The lock kind the destination's queue settings ask for."""
    if settings.lock == "redis":
        return RedisLock(settings.redis_url, namespace,
                         timeout=attempt_time if attempt_time else REDIS_TIMEOUT)
    return SwiftLock(connection, container, lock_connection=lock_connection,
                     attempt_time=attempt_time)
