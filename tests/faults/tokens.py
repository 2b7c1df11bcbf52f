"""Revoke or expire a tempauth token in the real Swift, through its memcached.

tempauth keeps each token in memcached as ``AUTH_/token/<token>`` ->
``[expires, groups]`` (JSON; swift's client stores keys as their MD5). Deleting
that entry is a revocation: the next request with the token gets 401 and the
next auth request gets a new token. Rewriting ``expires`` into the past is
the token's natural expiry, without waiting ``token_life`` for it.
"""

import hashlib
import json
import socket
import time

RESELLER_PREFIX = "AUTH_"
JSON_FLAG = 2  # swift.common.memcached


def _key(token):
    return hashlib.md5(f"{RESELLER_PREFIX}/token/{token}".encode(),
                       usedforsecurity=False).hexdigest().encode()


def _command(port, line, payload=None):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(line + (b"\r\n" + payload if payload is not None else b"") + b"\r\n")
        reply = b""
        while not reply.endswith((b"END\r\n", b"STORED\r\n", b"DELETED\r\n", b"NOT_FOUND\r\n",
                                  b"ERROR\r\n", b"OK\r\n")):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
        return reply


def flush(memcache_port):
    """Empty memcached: Swift's authtoken cache too, so a token revoked in Keystone
    is validated again (and refused) at its next use instead of after the cache time."""
    return _command(memcache_port, b"flush_all").startswith(b"OK")


def revoke(memcache_port, token):
    """Delete the token; True if memcached had it."""
    return _command(memcache_port, b"delete " + _key(token)).startswith(b"DELETED")


def expire(memcache_port, token):
    """Make the token's expiry time lie in the past; True if memcached had it."""
    reply = _command(memcache_port, b"get " + _key(token))
    if not reply.startswith(b"VALUE "):
        return False
    value = reply.split(b"\r\n", 2)[1]
    _, groups = json.loads(value)
    stale = json.dumps([time.time() - 1, groups]).encode()
    line = b"set %s %d 60 %d" % (_key(token), JSON_FLAG, len(stale))
    return _command(memcache_port, line, stale).startswith(b"STORED")
