"""SwiftStore against the real Swift: the storing guarantees, one by one."""

import hashlib
import io
import threading
import time

import pytest

from swiftdrop.config import Account, Destination
from swiftdrop.deadline import Deadline
from swiftdrop.reception import Message
from swiftdrop.storage import StoreError, SwiftStore
from swiftdrop.swift_client import Endpoint
from tests.faults.faultproxy import FaultProxy


def destination(swift, container, retries=0, account="test"):
    user, key = swift.accounts[account]
    return Destination("T", (), container,
                       Account(authurl=swift.auth_url, user=user, key=key, retries=retries,
                               timeout=5))


def message(body, md5=None):
    return Message(io.BytesIO(body), len(body), md5 or hashlib.md5(body).hexdigest(), None)


@pytest.fixture(scope="module")
def container(swift):
    swift.connection().put_container("storage-tests")
    return "storage-tests"


def deadline(seconds=20):
    return Deadline(seconds)


def test_put_is_verified_and_carries_metadata(swift, container):
    store = SwiftStore()
    copy = store.put(destination(swift, container), "cur/verified", message(b"abc\r\n"),
                     {"Mail-From": "s@o.test", "Rcpt-To": "ünïcode@exämple.test"},
                     deadline=deadline())
    assert (copy.etag, copy.attempts) == (hashlib.md5(b"abc\r\n").hexdigest(), 1)
    assert copy.transaction_id.startswith("tx")
    headers = swift.connection().head_object(container, "cur/verified")
    assert headers["x-object-meta-rcpt-to"] == "ünïcode@exämple.test"


def test_never_overwrites_another_message(swift, container):
    store = SwiftStore()
    target = destination(swift, container)
    store.put(target, "cur/taken", message(b"first\r\n"), {}, deadline=deadline())
    with pytest.raises(StoreError) as caught:
        store.put(target, "cur/taken", message(b"second\r\n"), {}, deadline=deadline())
    assert caught.value.status == 412
    assert swift.connection().get_object(container, "cur/taken")[1] == b"first\r\n"


def test_an_earlier_attempt_that_landed_counts_as_stored(swift, container):
    """A retry after a lost 201 meets 412; same ETag means it is our own copy."""
    store = SwiftStore()
    target = destination(swift, container)
    store.put(target, "cur/landed", message(b"same\r\n"), {}, deadline=deadline())
    copy = store.put(target, "cur/landed", message(b"same\r\n"), {}, deadline=deadline())
    assert copy.etag == hashlib.md5(b"same\r\n").hexdigest()


def test_wrong_checksum_is_refused_by_swift(swift, container):
    store = SwiftStore()
    with pytest.raises(StoreError) as caught:
        store.put(destination(swift, container), "cur/corrupt", message(b"x\r\n", md5="0" * 32),
                  {}, deadline=deadline())
    assert caught.value.status == 422
    assert caught.value.transaction_id
    names = [o["name"] for o in swift.connection().get_container(container)[1]]
    assert "cur/corrupt" not in names


def test_missing_container_is_not_retried(swift):
    store = SwiftStore()
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        store.put(destination(swift, "no-such-container", retries=3), "cur/x",
                  message(b"x\r\n"), {}, deadline=deadline())
    assert caught.value.status == 404
    assert "404" in caught.value.reason
    assert time.monotonic() - started < 5  # no back-off for a permanent answer


def test_deadline_stops_retrying(swift, container):
    """No attempt starts when less than a second is left of the deadline."""
    store = SwiftStore()
    with pytest.raises(StoreError, match="deadline"):
        store.put(destination(swift, container), "cur/late", message(b"x\r\n"), {},
                  deadline=Deadline(0.5))


def test_threads_share_one_token_per_account(swift, container):
    store = SwiftStore()
    target = destination(swift, container)
    other = destination(swift, container, account="test2")
    swift.connection("test2").put_container(container)
    errors = []

    def work(number):
        try:
            for item in range(10):
                name = f"cur/thread-{number}-{item}"
                store.put(target if number % 2 else other, name, message(name.encode()), {},
                          deadline=deadline())
        except StoreError as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.auth_requests == 2


def test_delete_removes_a_copy_and_reports_failure_quietly(swift, container):
    store = SwiftStore()
    target = destination(swift, container)
    store.put(target, "cur/rollback", message(b"r\r\n"), {}, deadline=deadline())
    assert store.delete(target, "cur/rollback") is True
    assert store.delete(target, "cur/rollback") is True  # 404: gone is gone
    assert store.delete(destination(swift, "no-such-container"), "cur/x") is True
    with FaultProxy(swift.port) as proxy:
        proxy.set_mode("status", 503, methods=("DELETE",))
        unreachable = Destination("T", (), container, Account(
            authurl=proxy.auth_url, user="test:tester", key="testing", timeout=5))
        assert store.delete(unreachable, "cur/rollback") is False  # reported, not raised


def test_a_failed_check_of_an_earlier_copy_is_a_retryable_store_error(swift, container):
    """PUT meets 412 and the HEAD that would confirm our own copy fails: a StoreError.

    Not any other exception, which would skip the retries and the removal
    of sibling copies that a StoreError gets in Deliverer.
    """
    body = b"landed, reply lost\r\n"
    swift.connection().put_object(container, "cur/unconfirmed", body,
                                  etag=hashlib.md5(body).hexdigest())
    with FaultProxy(swift.port) as proxy:
        target = Destination("T", (), container,
                             Account(authurl=proxy.auth_url, user="test:tester",
                                     key="testing", retries=1, timeout=5))
        proxy.set_mode("status", 503, methods=("HEAD",))
        with pytest.raises(StoreError) as caught:
            SwiftStore().put(target, "cur/unconfirmed", message(body), {}, deadline=deadline())
        assert caught.value.status == 503
        assert proxy.stats.snapshot()["injected"] == 2  # one HEAD per attempt
        proxy.set_mode("pass")
        copy = SwiftStore().put(target, "cur/unconfirmed", message(body), {},
                                deadline=deadline())
        assert copy.etag == hashlib.md5(body).hexdigest()


def test_a_connection_cut_after_the_put_headers_is_retried_and_found_stored(swift, container):
    """swiftclient reads the body lazily: the cut surfaces as urllib3's ProtocolError.

    Swift stored the object; the retry meets 412 and the HEAD confirms our copy.
    """
    body = b"answered, then cut\r\n"
    with FaultProxy(swift.port) as proxy:
        target = Destination("T", (), container,
                             Account(authurl=proxy.auth_url, user="test:tester",
                                     key="testing", retries=1, timeout=5))
        proxy.set_mode("cut-after-headers", 1, methods=("PUT",))
        copy = SwiftStore().put(target, "cur/cut-after-headers", message(body), {},
                                deadline=deadline())
        assert proxy.stats.snapshot()["injected"] == 1
    assert (copy.etag, copy.attempts) == (hashlib.md5(body).hexdigest(), 2)
    assert swift.connection().get_object(container, "cur/cut-after-headers")[1] == body


def test_every_put_cut_after_its_headers_is_a_store_error_that_says_so(swift, container):
    with FaultProxy(swift.port) as proxy:
        target = Destination("T", (), container,
                             Account(authurl=proxy.auth_url, user="test:tester",
                                     key="testing", retries=1, timeout=5))
        proxy.set_mode("cut-after-headers", 0, methods=("PUT", "HEAD"))
        with pytest.raises(StoreError) as caught:
            SwiftStore().put(target, "cur/always-cut", message(b"cut\r\n"), {},
                             deadline=deadline())
    assert caught.value.reason.endswith("closed the connection after its response headers")
    assert caught.value.reason.startswith(f"Swift at http://127.0.0.1:{proxy.port}")


@pytest.mark.parametrize(("status", "attempts"), [(429, 3), (498, 3), (503, 3), (403, 1)])
def test_rate_limits_are_retried_like_a_503_and_a_refusal_is_not(swift, container, status,
                                                                 attempts):
    """429 and Swift's ratelimit 498 may pass after the back-off; a 403 cannot."""
    with FaultProxy(swift.port) as proxy:
        target = Destination("T", (), container,
                             Account(authurl=proxy.auth_url, user="test:tester",
                                     key="testing", retries=2, timeout=5))
        proxy.set_mode("status", status, methods=("PUT",))
        with pytest.raises(StoreError) as caught:
            SwiftStore().put(target, f"cur/limited-{status}", message(b"later\r\n"), {},
                             deadline=deadline())
        assert caught.value.status == status
        assert caught.value.reason.startswith(f"Swift answered {status}")
        assert proxy.stats.snapshot()["injected"] == attempts


def test_a_storage_url_without_a_port_means_the_scheme_s_own():
    assert (Endpoint("http://swift.example.com/v1/AUTH_a").port,
            Endpoint("https://swift.example.com/v1/AUTH_a").port,
            Endpoint("http://[::1]:8080/v1/AUTH_a").port) == (80, 443, 8080)
    assert Endpoint("https://swift.example.com/v1/AUTH_a").url_path(
        "mail box", "cur/1.M2P3.mx,S=4") == "/v1/AUTH_a/mail%20box/cur/1.M2P3.mx,S=4"
