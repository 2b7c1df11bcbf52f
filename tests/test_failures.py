"""The error boundary as pure logic: each library's exception, the operator's sentence.

The real failures are produced against real servers in test_storage.py,
test_keystone_faults.py and the fault suite; here the mapping itself is
pinned down for the exception shapes those libraries raise, chained the way
they chain them.
"""

import http.client

from keystoneauth1 import exceptions as keystone_errors
import pytest
import requests
from swiftclient.exceptions import ClientException
import urllib3.exceptions

from swiftdrop.failures import StoreError, service_errors, store_error

KEYSTONE = "Keystone at https://keystone.example.com/v3"


def chained(*errors):
    """The last error, raised while handling the one before it, and so on."""
    current = None
    for error in errors:
        try:
            try:
                if current is not None:
                    raise current
            finally:
                raise error
        except BaseException as caught:
            current = caught
    return current


def test_keystone_refusing_connections():
    error = chained(ConnectionRefusedError(111, "Connection refused"),
                    urllib3.exceptions.NewConnectionError(None, "Failed to establish"),
                    keystone_errors.ConnectFailure("Unable to establish connection"))
    stored = store_error(error, server=KEYSTONE, timeout=10)
    assert (stored.reason, stored.permanent) == (f"{KEYSTONE}: connection refused", False)


def test_keystone_silent():
    error = chained(TimeoutError("timed out"),
                    urllib3.exceptions.ReadTimeoutError(None, "/v3", "Read timed out."),
                    keystone_errors.ConnectTimeout("Request timed out"))
    assert store_error(error, server=KEYSTONE, timeout=5).reason == (
        f"{KEYSTONE} did not answer within 5 s")


@pytest.mark.parametrize(("status", "phrase", "permanent"), [
    (500, "Internal Server Error", False), (503, "Service Unavailable", False),
    (401, "Unauthorized", True)])
def test_keystone_answering_an_error(status, phrase, permanent):
    response = requests.Response()
    response.status_code = status
    response.headers["Content-Type"] = "application/json"
    response._content = b'{"error": {"message": "from Keystone"}}'
    error = keystone_errors.from_response(
        response, "POST", "https://keystone.example.com/v3/auth/tokens")
    wrapped = chained(error, ClientException("Authorization Failure. Authorization failed"))
    stored = store_error(wrapped, server=KEYSTONE)
    assert stored.reason == f"{KEYSTONE} answered {status} {phrase}"
    assert stored.permanent is permanent
    assert stored.status is None  # Keystone's status is no Swift status


def test_swift_cut_after_its_response_headers():
    error = chained(http.client.IncompleteRead(b"", 12),
                    urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead"))
    assert store_error(error, server="Swift at http://127.0.0.1:8080").reason == (
        "Swift at http://127.0.0.1:8080 closed the connection after its response headers")


def test_swift_answers_keep_their_status_for_retries_and_the_journal():
    error = ClientException("Object PUT failed", http_status=503,
                            http_reason="Service Unavailable", http_response_headers={
                                "X-Trans-Id": "tx123"})
    stored = store_error(error, server="Swift at http://127.0.0.1:8080")
    assert (stored.reason, stored.status) == ("Swift answered 503 Service Unavailable", 503)


def test_every_library_failure_is_a_service_error_and_a_bug_is_not():
    for error in (keystone_errors.ConnectFailure("x"), urllib3.exceptions.ProtocolError("x"),
                  requests.ConnectionError("x"), http.client.RemoteDisconnected("x"),
                  OSError("x"), ClientException("x")):
        assert isinstance(error, service_errors()), error
    for bug in (TypeError("x"), KeyError("x"), AttributeError("x")):
        assert not isinstance(bug, service_errors())
    assert store_error(StoreError("already mapped"), server=KEYSTONE).reason == "already mapped"
