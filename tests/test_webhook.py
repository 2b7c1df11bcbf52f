"""The webhook transport end to end: the real Swift, the worker, and a real receiver on loopback.

The receiver is http.server (and ssl) in a thread; it records every request
and answers as each test scripts it. Signatures are checked with Python's
``hmac`` here, never with the project's helper.
"""

import base64
from dataclasses import dataclass
from email.message import EmailMessage
import hashlib
import hmac
import http.server
import itertools
import json
import os
import pathlib
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request

import pytest

from swiftdrop import config as config_module
from swiftdrop import metrics
from swiftdrop.queue import MailQueue
from swiftdrop.webhook import post
from swiftdrop.worker import WebhookConsumer, consume
from tests.support.filterproc import run_swiftdrop, swiftdrop_command
from tests.support.ports import reserve_port
from tests.support.tlsfront import TestCA

SECRET = "webhook-test-secret"
CONTAINERS = itertools.count()
NAME_TIMES = itertools.count(1_767_225_600)
RUN = os.urandom(4).hex()  # names differ from run to run: the journal keeps the last run's


@dataclass
class Request:
    path: str
    headers: dict
    body: bytes

    @property
    def json(self):
        return json.loads(self.body)


def respond(status, body=b"", **headers):
    """An answer of `status`; header names with underscores for dashes (Retry_After)."""
    def answer(handler):
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return answer


def reset(handler):
    """Hang up with a TCP reset (SO_LINGER 0) instead of answering."""
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.connection.close()


def trickle(handler):
    """A status line a byte at a time, never finished: each read succeeds, the POST never does."""
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: ":
        if handler.server.released.wait(0.2):
            return
        handler.wfile.write(bytes([byte]))


def hold(handler):
    """Answer 200 only once the test says so."""
    handler.server.held.set()
    handler.server.released.wait(30)
    respond(200)(handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(Request(self.path, dict(self.headers.items()), body))
        script = self.server.script
        (script.pop(0) if script else respond(204))(self)
        self.close_connection = True

    def do_GET(self):
        self.do_POST()

    def log_message(self, *args):
        pass


class Receiver:
    """``with Receiver() as receiver``: POST to ``receiver.url``; its answers come from ``script``.

    With `tls` (certificate, key) it speaks HTTPS only.
    """

    def __init__(self, tls=None):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.requests, self.server.script = [], []
        self.server.held, self.server.released = threading.Event(), threading.Event()
        scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hook"

    @property
    def requests(self):
        return self.server.requests

    @property
    def script(self):
        return self.server.script

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.released.set()
        self.server.shutdown()
        self.server.server_close()


def verify(request, secret=SECRET):
    """Check X-SwiftDrop-Signature with hmac over "<timestamp>.<body>", as a consumer would."""
    timestamp = request.headers["X-SwiftDrop-Timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + request.body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-SwiftDrop-Signature"], f"v1={expected}")
    assert abs(time.time() - int(timestamp)) < 300


def make_ini(path, swift, container, url, **keys):
    """An ini for `container` whose webhook is `url`; keys: webhook_* and queue_* settings."""
    settings = {"recipient": "DEFAULT", "container": container, "authurl": swift.auth_url,
                "user": "test:tester", "key": "testing", "webhook_url": url,
                "webhook_secret": SECRET, **keys}
    path.write_text("[DEFAULT]\n" + "".join(f"{key} = {value}\n"
                                            for key, value in settings.items() if value))
    return path


@pytest.fixture
def container(swift):
    name = f"webhook-{next(CONTAINERS)}"
    swift.connection().put_container(name)
    return name


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


class Rig:
    """A destination with a webhook, its queue, and a way to run the worker until it is idle."""

    def __init__(self, swift, container, tmp_path, url, **keys):
        self.swift, self.container = swift, container
        self.ini = make_ini(tmp_path / "swiftdrop.ini", swift, container, url, **keys)
        self.destination = config_module.load(str(self.ini)).catch_all
        self.queue = MailQueue(self.destination)
        self.connection = swift.connection()

    def store(self, body=b"Subject: hello\r\nMessage-ID: <m@x>\r\n\r\nhello\r\n", **metadata):
        name = f"{next(NAME_TIMES)}.M000001P1Q1.mx-{RUN}.test,S={len(body)}"
        headers = {f"X-Object-Meta-{key}": value for key, value in {
            "Mail-From": "sender@example.org", "Rcpt-To": "a@example.com, b@example.com",
            "Rcpt-Count": "2", "Client-Address": "192.0.2.7", **metadata}.items()}
        self.connection.put_object(self.container, "cur/" + name, body, headers=headers)
        return name

    def run(self, settings=None):
        """One pass of the webhook worker over what is due; its Counter of outcomes."""
        consumer = WebhookConsumer(self.destination, settings or self.destination.webhook)
        return consume(self.queue, consumer, threading.Event(), once=True)

    def where(self, name):
        return self.queue.state_of(name, ("done/", "failed/", "retry/", "cur/", "processing/"))

    def metadata(self, name):
        state = self.where(name)
        return self.connection.head_object(self.container, state + name)


@pytest.fixture
def rig(swift, container, tmp_path, receiver):
    made = Rig(swift, container, tmp_path, receiver.url)
    yield made
    made.queue.close()


def test_a_2xx_is_done_and_the_post_is_signed_and_says_what_it_carries(rig, receiver):
    name = rig.store()
    before = metrics.WORKER_REGISTRY.get_sample_value(
        "swiftdrop_webhook_delivered_total", {"destination": "DEFAULT"}) or 0
    assert rig.run() == {"done": 1}
    assert rig.where(name) == "done/"
    [request] = receiver.requests
    verify(request)
    headers = request.headers
    assert (headers["Content-Type"], headers["X-SwiftDrop-Id"], headers["X-SwiftDrop-Delivery"],
            headers["X-SwiftDrop-Redelivered"], headers["X-SwiftDrop-Replayed"]) == (
        "application/json", f"{rig.container}/{name}", "1", "0", "0")
    assert headers["User-Agent"].startswith("SwiftDrop/")
    assert request.path == "/hook"
    payload = request.json
    assert (payload["name"], payload["delivery"], payload["redelivered"],
            payload["envelope"]["rcpt_to"], payload["envelope"]["client_address"],
            payload["message"]["subject"]) == (
        name, 1, False, ["a@example.com", "b@example.com"], "192.0.2.7", "hello")
    assert metrics.WORKER_REGISTRY.get_sample_value(
        "swiftdrop_webhook_delivered_total", {"destination": "DEFAULT"}) == before + 1
    # every outcome's series is there from the start, at 0 if nothing happened
    for outcome in ("3xx", "tls", "timeout"):
        assert metrics.WORKER_REGISTRY.get_sample_value(
            "swiftdrop_webhook_requests_total",
            {"destination": "DEFAULT", "outcome": outcome}) is not None


def test_a_repeat_after_a_500_is_marked_as_a_redelivery_with_the_same_id(
        swift, container, tmp_path, receiver):
    rig = Rig(swift, container, tmp_path, receiver.url, queue_retry_delay="0")
    name = rig.store()
    receiver.script.append(respond(500, b"database down\nat line 3"))
    assert rig.run() == {"retry": 1, "done": 1}  # due again at once, without a back-off
    assert rig.where(name) == "done/"
    # the 500 is kept as the last error, for whoever wonders about the repeat
    assert rig.metadata(name)["x-object-meta-last-error"] == \
        "HTTP 500 Internal Server Error: database down"
    first, second = receiver.requests
    for request in (first, second):
        verify(request)
    assert first.headers["X-SwiftDrop-Id"] == second.headers["X-SwiftDrop-Id"]
    assert (second.headers["X-SwiftDrop-Delivery"], second.headers["X-SwiftDrop-Redelivered"]) \
        == ("2", "1")
    assert (second.json["delivery"], second.json["redelivered"], second.json["attempts"]) == (
        2, True, 1)


@pytest.mark.parametrize("status", [406, 410])
def test_406_and_410_fail_at_once_with_the_reason(rig, receiver, status):
    name = rig.store()
    receiver.script.append(respond(status, b"unknown mailbox"))
    before = metrics.WORKER_REGISTRY.get_sample_value(
        "swiftdrop_webhook_dead_letters_total", {"destination": "DEFAULT"}) or 0
    assert rig.run() == {"failed": 1}
    reason = rig.metadata(name)["x-object-meta-failed-reason"]
    assert reason.startswith(f"HTTP {status} ") and reason.endswith(": unknown mailbox")
    assert rig.where(name) == "failed/"
    assert metrics.WORKER_REGISTRY.get_sample_value(
        "swiftdrop_webhook_dead_letters_total", {"destination": "DEFAULT"}) == before + 1


@pytest.mark.parametrize(("answer", "error"), [
    (respond(500), "HTTP 500 Internal Server Error"),
    (respond(503), "HTTP 503 Service Unavailable"),
    (respond(429), "HTTP 429 Too Many Requests"),
    # a misconfigured receiver must not eat mail: other 4xx are retried
    (respond(400), "HTTP 400 Bad Request"),
    (respond(401), "HTTP 401 Unauthorized"),
    (respond(404), "HTTP 404 Not Found"),
    (respond(413), "HTTP 413 Request Entity Too Large"),
    (respond(302, Location="/elsewhere?token=secret"),
     "HTTP 302 Found: redirects are not followed (Location: /elsewhere)"),
    (reset, None),
])
def test_other_answers_are_retried_with_the_last_error(rig, receiver, answer, error):
    name = rig.store()
    receiver.script.append(answer)
    assert rig.run() == {"retry": 1}
    last_error = rig.metadata(name)["x-object-meta-last-error"]
    if error:
        assert last_error == error
    else:
        assert last_error in ("connection reset", "connection closed without an answer")
    assert rig.metadata(name)["x-object-meta-attempts"] == "1"
    # the redirect was not followed: nothing asked for /elsewhere
    assert [request.path for request in receiver.requests] == ["/hook"]


def test_a_receiver_that_hangs_or_trickles_times_out_as_a_whole(swift, container, tmp_path,
                                                                  receiver):
    rig = Rig(swift, container, tmp_path, receiver.url, webhook_timeout="1")
    hung, trickled = rig.store(), rig.store()
    receiver.script.extend([trickle, trickle])
    assert rig.run() == {"retry": 2}
    for name in (hung, trickled):
        assert rig.metadata(name)["x-object-meta-last-error"] == "timed out after 1 s"


def test_a_refused_connection_is_retried(swift, container, tmp_path):
    nobody = f"http://127.0.0.1:{reserve_port()}/hook"  # reserved, so nothing listens there
    rig = Rig(swift, container, tmp_path, nobody)
    name = rig.store()
    assert rig.run() == {"retry": 1}
    assert rig.metadata(name)["x-object-meta-last-error"] == "connection refused"


def test_retry_after_is_the_least_wait_up_to_the_longest(swift, container, tmp_path, receiver):
    rig = Rig(swift, container, tmp_path, receiver.url, queue_retry_longest="1000")
    for _ in range(3):
        rig.store()
    receiver.script.extend([respond(429, Retry_After="600"), respond(503, Retry_After="99999"),
                            respond(500, Retry_After="600")])
    before = time.time()
    assert rig.run() == {"retry": 3}
    after = time.time()
    # the claim takes the oldest in random order: the i-th request got the i-th answer
    soon, capped, ignored = (float(rig.metadata(request.json["name"])[
        "x-object-meta-not-before"]) for request in receiver.requests)
    assert before + 600 <= soon <= after + 600
    assert before + 1000 <= capped <= after + 1000
    # a 500's Retry-After is no promise: the back-off alone (60 s, up to a tenth more)
    assert before + 60 <= ignored <= after + 66


def test_the_heartbeat_keeps_the_lock_while_a_post_runs(swift, container, tmp_path, receiver):
    # the shortest lease these account settings allow: refreshed after about a second
    rig = Rig(swift, container, tmp_path, receiver.url, timeout="2", retries="1",
              queue_lease="8", webhook_timeout="7")
    name = rig.store()
    receiver.script.append(hold)
    worker = threading.Thread(target=rig.run)
    worker.start()
    try:
        assert receiver.server.held.wait(30)
        lock = f"locks/{name}"
        first = int(rig.connection.head_object(container, lock)["x-delete-at"])
        deadline = time.monotonic() + 6
        while int(rig.connection.head_object(container, lock)["x-delete-at"]) <= first:
            assert time.monotonic() < deadline, "the lock was not refreshed during the POST"
            time.sleep(0.1)
        other = MailQueue(rig.destination)
        assert list(other.recover()) == []  # a live lock: nothing to recover
        other.close()
    finally:
        receiver.server.released.set()
        worker.join()
    assert rig.where(name) == "done/"
    rig.queue.close()


def test_a_big_attachment_is_linked_and_a_small_one_inline(swift, container, tmp_path,
                                                           receiver):
    rig = Rig(swift, container, tmp_path, receiver.url, webhook_inline_limit="4096")
    big = os.urandom(100_000)
    message = EmailMessage()
    message["Subject"] = "two attachments"
    message.set_content("see attached\n")
    message.add_attachment(b"tiny", maintype="text", subtype="plain", filename="tiny.txt")
    message.add_attachment(big, maintype="image", subtype="png", filename="big.png")
    name = rig.store(message.as_bytes())
    unparsable = rig.store(b"Message-ID: <<<>>>\r\n\r\nbody\r\n")
    assert rig.run() == {"done": 2}
    by_name = {request.json["name"]: request.json for request in receiver.requests}
    tiny, linked = by_name[name]["message"]["attachments"]
    assert base64.b64decode(tiny["content_base64"]) == b"tiny"
    with urllib.request.urlopen(linked["url"], timeout=10) as response:
        assert response.read() == big
    broken = by_name[unparsable]
    assert broken["message"] is None and broken["parse_error"].startswith("IndexError")
    with urllib.request.urlopen(broken["raw_url"], timeout=10) as response:
        assert response.read() == b"Message-ID: <<<>>>\r\n\r\nbody\r\n"
    # the links outlive the message's move to done/
    assert {item["name"] for item in rig.connection.get_container(
        container, prefix="attachments/")[1]} == {f"attachments/{name}/1",
                                                  f"attachments/{unparsable}/raw"}


def test_the_raw_format_posts_the_bytes_with_the_envelope_as_headers(swift, container,
                                                                       tmp_path, receiver):
    rig = Rig(swift, container, tmp_path, receiver.url, webhook_format="raw")
    body = b"Subject: raw\r\n\r\nthe bytes\r\n"
    name = rig.store(body, **{"Spf": "pass", "Client-Helo": "helo.example.org"})
    assert rig.run() == {"done": 1}
    [request] = receiver.requests
    verify(request)
    assert request.body == body
    assert {key: request.headers[key] for key in (
        "Content-Type", "X-SwiftDrop-Id", "X-SwiftDrop-Mail-From", "X-SwiftDrop-Rcpt-To",
        "X-SwiftDrop-Rcpt-Count", "X-SwiftDrop-Client-Helo", "X-SwiftDrop-Spf",
        "X-SwiftDrop-Dkim")} == {
        "Content-Type": "message/rfc822", "X-SwiftDrop-Id": f"{container}/{name}",
        "X-SwiftDrop-Mail-From": "sender@example.org",
        "X-SwiftDrop-Rcpt-To": "a@example.com, b@example.com", "X-SwiftDrop-Rcpt-Count": "2",
        "X-SwiftDrop-Client-Helo": "helo.example.org", "X-SwiftDrop-Spf": "pass",
        "X-SwiftDrop-Dkim": ""}


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """The CA the worker trusts, and certificates: good, for another name, by an unknown CA."""
    directory = tmp_path_factory.mktemp("webhook-tls")
    trusted, stranger = TestCA(directory / "trusted"), TestCA(directory / "stranger")
    return {"ca": trusted.cert, "good": trusted.issue("receiver", "IP:127.0.0.1"),
            "wrong name": trusted.issue("other", "DNS:hooks.example.com"),
            "unknown ca": stranger.issue("receiver", "IP:127.0.0.1")}


@pytest.mark.parametrize("case", [
    ("good", "", None),
    ("unknown ca", "", "TLS: unable to get local issuer certificate"),
    ("wrong name", "", "TLS: IP address mismatch, certificate is not valid for '127.0.0.1'."),
    ("unknown ca", "true", None),  # webhook_insecure: the operator said so
])
def test_https_is_verified_with_webhook_cacert(swift, container, tmp_path, tls, case):
    certificate, insecure, error = case
    with Receiver(tls=tls[certificate]) as receiver:
        rig = Rig(swift, container, tmp_path, receiver.url, webhook_cacert=str(tls["ca"]),
                  webhook_insecure=insecure)
        name = rig.store()
        outcome = rig.run()
        if error is None:
            assert outcome == {"done": 1}
            verify(receiver.requests[0])
        else:
            assert outcome == {"retry": 1}
            assert rig.metadata(name)["x-object-meta-last-error"] == error
            assert receiver.requests == []
        rig.queue.close()


def test_user_and_password_in_the_url_are_sent_as_basic_auth_and_never_shown(receiver):
    url = receiver.url.replace("http://", "http://hook%40user:p%3Ass@") + "?key=v"
    settings = config_module.WebhookSettings(url=url, secret=SECRET)
    answer = post(settings, b"{}", {"Content-Type": "application/json"})
    assert answer.state == "done"
    [request] = receiver.requests
    assert request.path == "/hook?key=v"
    assert base64.b64decode(request.headers["Authorization"].split()[1]) == b"hook@user:p:ss"
    assert config_module.public_url(url) == receiver.url


def test_queue_run_needs_a_command_or_a_webhook_and_not_both(swift, container, tmp_path):
    ini = tmp_path / "plain.ini"
    ini.write_text(f"[DEFAULT]\ncontainer = {container}\nauthurl = {swift.auth_url}\n"
                   "user = test:tester\nkey = testing\n")
    env = {key: value for key, value in os.environ.items()
           if key != "SWIFTDROP_WEBHOOK_SECRET"}
    for args, words in [
            ((), "needs a command after --, or a webhook: webhook_url in [DEFAULT] or "
                 "--webhook URL"),
            (("--webhook", "http://127.0.0.1:9/h", "--", "cat"), "not both"),
            (("--webhook", "http://127.0.0.1:9/h"), "SWIFTDROP_WEBHOOK_SECRET"),
            (("--webhook", "http://hooks.example.com/h"), "plain http to another host")]:
        result = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "run", "--once",
                                                  *args), capture_output=True, text=True,
                                env=env, timeout=60, check=False)
        assert result.returncode == 64, result.stderr
        assert words in result.stderr


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode().splitlines()


def test_queue_run_posts_with_the_environment_s_secret_serves_metrics_and_journals(
        swift, container, tmp_path, receiver, journald):
    ini = tmp_path / "plain.ini"
    ini.write_text(f"[DEFAULT]\ncontainer = {container}\nauthurl = {swift.auth_url}\n"
                   "user = test:tester\nkey = testing\nqueue_retry_delay = 0\n")
    rig = Rig(swift, container, tmp_path, receiver.url)
    done, refused = rig.store(), rig.store()
    receiver.script.extend([respond(204), respond(406, b"no such user")])
    port = reserve_port()
    worker = subprocess.Popen(
        swiftdrop_command("queue", "--config", str(ini), "run", "--poll", "0.2",
                          "--webhook", receiver.url, "--webhook-format", "raw",
                          "--metrics-listen", f"127.0.0.1:{port}"),
        env={**os.environ, "SWIFTDROP_WEBHOOK_SECRET": "from-the-environment",
             "JOURNAL_STREAM": "8:8"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(receiver.requests) < 2 or {rig.where(done), rig.where(refused)} != {
                "done/", "failed/"}:
            assert worker.poll() is None, worker.communicate()
            if time.monotonic() > deadline:
                worker.send_signal(signal.SIGTERM)
                pytest.fail(f"the worker did not POST both: {worker.communicate()}")
            time.sleep(0.1)
        # the claim takes the oldest in random order: which got the 406 is the second POSTed
        done, refused = (request.headers["X-SwiftDrop-Id"].split("/", 1)[1]
                         for request in receiver.requests)
        for request in receiver.requests:
            verify(request, secret="from-the-environment")
            assert request.headers["Content-Type"] == "message/rfc822"
        requests = 'swiftdrop_webhook_requests_total{destination="DEFAULT",outcome="%s"} %s'
        expected = {requests % ("2xx", "1.0"), requests % ("4xx", "1.0"),
                    requests % ("tls", "0.0"),
                    'swiftdrop_webhook_dead_letters_total{destination="DEFAULT"} 1.0',
                    'swiftdrop_webhook_delivered_total{destination="DEFAULT"} 1.0',
                    'swiftdrop_webhook_duration_seconds_count{destination="DEFAULT"} 2.0'}
        # counted once the finish is through, a moment after the message has moved
        while not expected <= set(scrape(port)):
            assert time.monotonic() < deadline, expected - set(scrape(port))
            time.sleep(0.1)
        # the worker's own metrics, not the filter's ingest counters at 0
        names = {line.split("{")[0].split()[0] for line in scrape(port) if line[:1] != "#"}
        assert "swiftdrop_build_info" in names
        assert not names & {"swiftdrop_messages_total", "swiftdrop_copies_total"}
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    assert worker.returncode == 0
    [good] = journald.entries(SWIFTDROP_OBJECT=done, SWIFTDROP_WEBHOOK_RESULT="done")
    assert good["MESSAGE"] == f"POST {done} to {receiver.url}: 204 (done)"
    assert (good["PRIORITY"], good["SWIFTDROP_WEBHOOK_OUTCOME"], good["SWIFTDROP_WEBHOOK_STATUS"],
            good["SWIFTDROP_CONTAINER"], good["SWIFTDROP_SECTION"]) == (
        "6", "2xx", "204", container, "DEFAULT")
    assert "SWIFTDROP_RESULT" not in good and "SWIFTDROP_REASON" not in good
    assert int(good["SWIFTDROP_WEBHOOK_MS"]) >= 0
    [bad] = journald.entries(SWIFTDROP_OBJECT=refused, SWIFTDROP_WEBHOOK_RESULT="failed")
    assert bad["MESSAGE"] == f"POST {refused} to {receiver.url}: 406 (failed)"
    assert (bad["PRIORITY"], bad["SWIFTDROP_REASON"]) == (
        "3", "HTTP 406 Not Acceptable: no such user")
    rig.queue.close()


def test_a_retry_is_journalled_at_warning_with_the_attempt(swift, container, tmp_path, receiver,
                                                          journald):
    rig = Rig(swift, container, tmp_path, receiver.url)
    name = rig.store()
    receiver.script.append(respond(503))
    result = subprocess.run(swiftdrop_command("queue", "--config", str(rig.ini), "run",
                                              "--once"),
                            env={**os.environ, "JOURNAL_STREAM": "8:8"}, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    [entry] = journald.entries(SWIFTDROP_OBJECT=name)
    assert entry["MESSAGE"] == f"POST {name} to {receiver.url}: 503 (retry, attempt 1 of 30)"
    assert (entry["PRIORITY"], entry["SWIFTDROP_WEBHOOK_RESULT"],
            entry["SWIFTDROP_WEBHOOK_OUTCOME"], entry["SWIFTDROP_REASON"]) == (
        "4", "retry", "5xx", "HTTP 503 Service Unavailable")
    assert json.loads(result.stdout) == {"retry": 1}
    rig.queue.close()


def test_the_config_check_of_run_uses_run_swiftdrop(swift, container, tmp_path):
    ini = make_ini(tmp_path / "swiftdrop.ini", swift, container, "http://127.0.0.1:9/h",
                   webhook_timeout="400")
    result = run_swiftdrop("queue", "--config", str(ini), "run", "--once")
    assert result.returncode == 78
    assert "webhook_timeout: 400 s must be shorter than the lease" in result.stderr


def recipe(heading, language):
    """The code block under `heading` in docs/webhooks.md, as a reader would copy it."""
    text = (pathlib.Path(__file__).parents[1] / "docs/webhooks.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_the_docs_verification_recipes_accept_a_real_request_and_refuse_a_forged_one(
        rig, receiver, tmp_path):
    rig.store()
    assert rig.run() == {"done": 1}
    [request] = receiver.requests
    namespace = {}
    exec(recipe("### In Python", "python"), namespace)  # the docs' own code, as written
    assert namespace["verify"](SECRET.encode(), request.headers, request.body)
    assert not namespace["verify"](SECRET.encode(), request.headers, request.body + b" ")
    assert not namespace["verify"](b"another secret", request.headers, request.body)

    def shell(body, secret=SECRET):
        (tmp_path / "body").write_bytes(body)
        return subprocess.run(["sh", "-c", recipe("### In shell", "sh")], cwd=tmp_path,
                              env={"PATH": os.environ["PATH"], "SECRET": secret,
                                   "TIMESTAMP": request.headers["X-SwiftDrop-Timestamp"],
                                   "SIGNATURE": request.headers["X-SwiftDrop-Signature"]},
                              capture_output=True, text=True, check=False)

    accepted = shell(request.body)
    assert (accepted.returncode, accepted.stdout, accepted.stderr) == (0, "valid\n", "")
    assert shell(request.body.replace(b"hello", b"hullo")).stdout == ""
    assert shell(request.body, secret="another secret").stdout == ""


def test_a_replayed_dead_letter_comes_again_marked_as_replayed(rig, receiver):
    name = rig.store()
    receiver.script.append(respond(410))
    assert rig.run() == {"failed": 1}
    result = run_swiftdrop("queue", "--config", str(rig.ini), "replay", name, "--execute")
    assert result.returncode == 0, result.stderr
    assert rig.run() == {"done": 1}
    first, again = receiver.requests
    assert first.headers["X-SwiftDrop-Replayed"] == "0"
    assert (again.headers["X-SwiftDrop-Replayed"], again.headers["X-SwiftDrop-Delivery"],
            again.headers["X-SwiftDrop-Redelivered"]) == ("1", "2", "1")
    assert (again.json["replayed"], again.json["attempts"]) == (1, 0)
    verify(again)
