"""Checks that tests.support.swiftserver gives us a real, persistent Swift.

These pin down the Swift behaviours SwiftDrop builds on, so a broken test
Swift shows up here rather than as puzzling failures elsewhere.
"""

import hashlib
import os
import time

import pytest
from swiftclient import client
from swiftclient.exceptions import ClientException

from tests.support.swiftserver import SwiftServer


def timed_start(server: SwiftServer) -> None:
    started = time.monotonic()
    server.start()
    print(f"swift startup took {time.monotonic() - started:.2f} s")


def http_status(call, *args, **kwargs) -> int:
    """Run a swiftclient call that must fail; return its HTTP status."""
    with pytest.raises(ClientException) as error:
        call(*args, **kwargs)
    return error.value.http_status


def test_conditional_put_etag_check_and_persistence(tmp_path):
    server = SwiftServer(tmp_path / "swift")
    try:
        timed_start(server)
        conn = server.connection(retries=0)
        conn.put_container("mail")
        body = os.urandom(100_000)
        etag = hashlib.md5(body).hexdigest()
        create_only = {"If-None-Match": "*"}

        conn.put_object("mail", "msg", body, etag=etag, headers=create_only)
        assert http_status(conn.put_object, "mail", "msg", body, etag=etag,
                           headers=create_only) == 412
        assert http_status(conn.put_object, "mail", "bad", body,
                           etag="0" * 32) == 422
        assert conn.get_object("mail", "msg")[1] == body
        names = [item["name"] for item in conn.get_container("mail")[1]]
        assert names == ["msg"]

        for restart in (server.stop, server.kill):
            restart()
            timed_start(server)
            conn = server.connection(retries=0)
            assert conn.get_object("mail", "msg")[1] == body
    finally:
        server.close()


def test_other_accounts_are_separate(tmp_path):
    with SwiftServer(tmp_path / "swift") as server:
        server.connection("test").put_container("only-in-test")
        for account in ("test2", "test3"):
            conn = server.connection(account, retries=0)
            assert conn.get_auth()[0].endswith(f"/AUTH_{account}")
            assert conn.get_account()[1] == []


def test_token_expires(tmp_path):
    with SwiftServer(tmp_path / "swift", token_life=2) as server:
        url, token = server.connection().get_auth()
        client.head_account(url, token)
        time.sleep(3)
        assert http_status(client.head_account, url, token) == 401
