"""Moving a message from one state to the next: a server-side copy, then a delete.

Only ever done under the message's lock (swiftdrop.queue.holding), which is
what keeps two workers from moving the same message.
"""

from concurrent.futures import ThreadPoolExecutor

from ..libraries import ClientException
from .connection import connect

# Swift evaluates a copy's conditional headers against its source (not its target).
FENCE_HEADER = "If-Unmodified-Since"


class Moves:
    """Listing, copying and deleting within the queue's container."""

    def listing(self, prefix):
        return self.connection.get_container(self.container, prefix=prefix,
                                             full_listing=True)[1]

    def move(self, name, source, target, metadata=None):
        """Copy source+name to target+name, then delete the source; False if it is gone."""
        if not self.copy(name, source, target, metadata):
            return False
        self._delete(source + name)
        return True

    def copy(self, name, source, target, metadata=None, *, fence=None):
        """Copy source+name to target+name server-side; False if the source is not ours.

        Callers hold the name's lock, so nobody else moves it meanwhile; a
        copy already at the target can only be a crash's leftover of the
        same message, and is replaced. The source being gone means someone
        else moved it before we took the lock. With `fence` (a claim's, see
        swiftdrop.queue.states.Claimed) Swift copies only a source not
        modified since: a source newer than that is another claim's (412),
        which a holder whose lease ran out must not move.
        """
        headers = {"X-Copy-From": f"/{self.container}/{source}{name}"}
        if fence is not None:
            headers[FENCE_HEADER] = fence
        headers.update((f"X-Object-Meta-{key}", str(value))
                       for key, value in (metadata or {}).items())
        try:
            self.connection.put_object(self.container, target + name, None, headers=headers)
        except ClientException as error:
            if error.http_status in (404, 412):
                return False
            raise
        return True

    def state_of(self, name, prefixes):
        """The first of `prefixes` that holds `name` (one HEAD each until found), or None."""
        for prefix in prefixes:
            try:
                self.connection.head_object(self.container, prefix + name)
            except ClientException as error:
                if error.http_status == 404:
                    continue
                raise
            return prefix
        return None

    def _delete(self, path, connection=None):
        try:
            (connection or self.connection).delete_object(self.container, path)
        except ClientException as error:
            if error.http_status != 404:
                raise

    def _delete_beside(self, path, request):
        """Delete `path` on the second connection while `request()` runs; return its result.

        Both must succeed before the caller goes on, as if one followed the
        other; the delete's error is raised once the request is done.
        """
        if self._beside is None:
            self._beside = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-delete"),
                            connect(self.destination, self.connection.url, self.connection.token))
        executor, connection = self._beside
        deleting = executor.submit(self._delete, path, connection)
        try:
            return request()
        finally:
            deleting.result()
