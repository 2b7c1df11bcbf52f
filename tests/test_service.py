"""``swiftdrop serve`` as a real process against a real Swift, spoken to over SMTP."""

import hashlib
import http.server
import json
import os
import pathlib
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time
import typing

import pytest

from swiftdrop.service import Server, bind_listener
from tests.conftest import CONTAINERS, create_containers, write_ini
from tests.faults.faultproxy import FaultProxy
from tests.support.filterproc import (
    FULL_REPLY,
    FilterProcess,
    run_swiftdrop,
    swiftdrop_command,
    wait_for_port,
)
from tests.support.ports import reserve_port
from tests.support.rawsmtp import RawSmtp
from tests.support.swiftserver import SwiftServer

NAME = re.compile(r"^cur/(\d{10})\.M(\d{6})P(\d+)Q(\d+)\.([^/:]+),S=(\d+)$")
STORED = re.compile(r"^2\.0\.0 Ok: stored as ([^/]+)/(cur/\S+?,S=\d+)")


@pytest.fixture(scope="module")
def filter_process(swift_ini, tmp_path_factory):
    with FilterProcess(swift_ini, tmp_path_factory.mktemp("filter"),
                       "--hostname", "mx1.example.test", "--max-message-size", "20000000",
                       "--log-target", "stderr", *FULL_REPLY) as process:
        yield process


class ReplyRecordingSMTP(smtplib.SMTP):
    """smtplib drops the final DATA reply's text; keep it, it names the object."""

    def data(self, msg):
        code, text = super().data(msg)
        self.last_data_reply = (code, text.decode())
        return code, text


def send(address, sender, recipients, body, **options):
    """Send with smtplib; return (code, text) of the reply that decided the message."""
    with ReplyRecordingSMTP(*address, timeout=60) as client:
        try:
            client.sendmail(sender, recipients, body, **options)
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as error:
            return error.smtp_code, error.smtp_error.decode()
        return client.last_data_reply


def stored_location(reply):
    code, text = reply
    assert code == 250, reply
    match = STORED.match(text)
    assert match, text
    return match.group(1), match.group(2)


def get(swift, account, container, name):
    return swift.connection(account).get_object(container, name)


def test_message_is_stored_byte_for_byte_with_maildir_name_and_metadata(swift, filter_process):
    body = (b"Message-ID: <unique-1@example.com>\r\nSubject: all the bytes\r\n\r\n"
            b".a line with a leading dot\r\n..two dots\r\n.\n"
            b"NUL \x00 and 8-bit \xe9\xff and a bare CR\r here\r\n"
            + b"L" * 5000 + b"\r\n")
    before = time.time()
    reply = send(filter_process.address, "sender@origin.test", ["someone@example.com"], body,
                 mail_options=["BODY=8BITMIME"])
    container, name = stored_location(reply)
    assert container == CONTAINERS["DEFAULT"]
    seconds, micro, pid, _, host, size = NAME.match(name).groups()
    assert before - 1 <= int(seconds) + int(micro) / 1e6 <= time.time()
    assert pid == str(filter_process.process.pid) and host == "mx1.example.test"
    assert int(size) == len(body)

    headers, stored = get(swift, "test", container, name)
    assert stored == body
    assert headers["etag"] == hashlib.md5(body).hexdigest()
    assert headers["content-type"] == "message/rfc822"
    assert headers["x-object-meta-mail-from"] == "sender@origin.test"
    assert headers["x-object-meta-rcpt-to"] == "someone@example.com"
    assert headers["x-object-meta-message-id"] == "<unique-1@example.com>"
    assert headers["x-object-meta-received-by"] == "mx1.example.test"


def test_one_copy_per_destination_and_reply_lists_all(swift, filter_process):
    body = b"Subject: fan-out\r\n\r\nhello\r\n"
    recipients = ["PROD@example.com", "billing@example.com", "ops@example.com", "x@example.com"]
    code, text = send(filter_process.address, "s@origin.test", recipients, body)
    assert code == 250
    locations = re.findall(r"(\w+)/(cur/\S+?,S=\d+)", text)
    assert [container for container, _ in locations] == ["production", "billing", "fallback"]
    assert len({name for _, name in locations}) == 1
    name = locations[0][1]
    headers, stored = get(swift, "test2", "production", name)
    assert stored == body
    assert headers["x-object-meta-rcpt-to"] == "PROD@example.com, ops@example.com"
    assert headers["x-object-meta-rcpt-count"] == "2"
    assert get(swift, "test", "billing", name)[1] == body
    assert get(swift, "test", "fallback", name)[0]["x-object-meta-rcpt-to"] == "x@example.com"


def test_many_messages_authenticate_once_per_account(swift, filter_process):
    names = set()
    for number in range(30):
        recipients = ["prod@example.com"] if number % 2 else ["a@example.com"]
        body = f"Subject: {number}\r\n\r\nbody {number}\r\n".encode()
        names.add(stored_location(send(filter_process.address, "s@o.test", recipients, body)))
    assert len(names) == 30
    log = filter_process.log()
    assert log.count("authenticated test:tester ") == 1
    assert log.count("authenticated test2:tester2 ") == 1
    assert "testing" not in log  # keys never reach the log


def test_large_message_is_spooled_and_stored(swift, filter_process):
    body = b"Subject: big\r\n\r\n" + (b"0123456789" * 100 + b"\r\n") * 5000
    container, name = stored_location(send(filter_process.address, "s@o.test",
                                           ["big@example.com"], body))
    assert get(swift, "test", container, name)[1] == body


def descriptors_into(pid, directory):
    """How many of process `pid`'s descriptors point into `directory`.

    Spool files are O_TMPFILE: they never have a name in the directory, only
    an open descriptor whose link reads DIRECTORY/#INODE (deleted).
    """
    count = 0
    for entry in pathlib.Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(entry).startswith(f"{directory}/")
        except FileNotFoundError:  # closed while we looked
            continue
    return count


def wait_for_descriptors_into(pid, directory, count):
    deadline = time.monotonic() + 30
    while descriptors_into(pid, directory) != count:
        assert time.monotonic() < deadline, f"never {count} descriptor(s) into {directory}"
        time.sleep(0.02)


@pytest.fixture
def spooling_filter(swift_ini, tmp_path):
    """A filter with its own --spool-dir, and a TMPDIR it must leave alone."""
    spool_dir, tmpdir = (tmp_path / "spool").resolve(), (tmp_path / "tmp").resolve()
    spool_dir.mkdir(mode=0o700)
    tmpdir.mkdir()
    with FilterProcess(swift_ini, tmp_path, "--spool-dir", str(spool_dir), "--log-target",
                       "stderr", *FULL_REPLY, env={"TMPDIR": str(tmpdir)}) as process:
        yield process, spool_dir, tmpdir


def begin_data(address):
    client = RawSmtp(address)
    for command, code in (("EHLO client.test", 250), ("MAIL FROM:<s@origin.test>", 250),
                          ("RCPT TO:<big@example.com>", 250), ("DATA", 354)):
        assert client.command(command)[0] == code
    return client


# Over the 256 KiB a session keeps in memory, so the spool goes to disk.
SPOOLED_BODY = b"Subject: spooled\r\n\r\n" + (b"s" * 1022 + b"\r\n") * 1024


def test_a_message_over_256_kib_is_spooled_in_the_spool_dir_and_stored_exactly(
        swift, spooling_filter):
    process, spool_dir, tmpdir = spooling_filter
    pid = process.process.pid
    with begin_data(process.address) as client:
        client.send(SPOOLED_BODY)  # all but the final dot: the message is still arriving
        wait_for_descriptors_into(pid, spool_dir, 1)
        assert descriptors_into(pid, tmpdir) == 0
        client.send(b".\r\n")
        container, name = stored_location(client.reply())
    assert get(swift, "test", container, name)[1] == SPOOLED_BODY
    wait_for_descriptors_into(pid, spool_dir, 0)
    assert list(spool_dir.iterdir()) == []
    assert list(tmpdir.iterdir()) == []


def test_a_filter_killed_while_spooling_leaves_nothing_in_the_spool_dir(spooling_filter):
    """Why the role does not clean the spool at start: there is nothing to clean."""
    process, spool_dir, _ = spooling_filter
    with begin_data(process.address) as client:
        client.send(SPOOLED_BODY)
        wait_for_descriptors_into(process.process.pid, spool_dir, 1)
        process.stop(signal.SIGKILL)
    assert list(spool_dir.iterdir()) == []


def test_oversized_message_gets_552_and_nothing_is_stored(swift, filter_process):
    listing_before = swift.connection().get_container("fallback", full_listing=True)[1]
    body = b"Subject: huge\r\n\r\n" + b"x" * 20_000_001 + b"\r\n"
    code, _ = send(filter_process.address, "s@o.test", ["a@example.com"], body)
    assert code == 552
    assert swift.connection().get_container("fallback", full_listing=True)[1] == listing_before


@pytest.fixture
def own_swift(tmp_path):
    """A Swift of this test's own, so stopping it disturbs nobody else."""
    server = SwiftServer(tmp_path / "swift", token_life=3)
    server.start()
    yield server
    server.close()


@pytest.mark.slow  # over 10 s: kept out of the quick loop
def test_swift_down_gives_451_then_the_retry_is_stored(own_swift, tmp_path):
    ini = write_ini(tmp_path / "swiftdrop.ini", own_swift, timeout="2", retries="1")
    create_containers(ini)
    body = b"Subject: retry me\r\n\r\nplease\r\n"
    with FilterProcess(ini, tmp_path, "--store-timeout", "8", "--log-target", "stderr",
                       *FULL_REPLY) as proc:
        stored_location(send(proc.address, "s@o.test", ["a@example.com"], b"warm-up\r\n"))
        own_swift.stop()
        code, text = send(proc.address, "s@o.test", ["a@example.com"], body)
        assert (code, text) == (451, "4.3.0 Error: queue file write error")
        assert re.search(r"ERROR: not stored cur/\S+ in \[DEFAULT\] container fallback: "
                         r"Swift at http://127\.0\.0\.1:\d+: connection refused", proc.log())
        own_swift.start()
        names = [o["name"] for o in own_swift.connection().get_container("fallback")[1]]
        assert len(names) == 1  # only the warm-up: nothing of the 451 message was stored
        container, name = stored_location(send(proc.address, "s@o.test", ["a@example.com"], body))
        assert get(own_swift, "test", container, name)[1] == body


@pytest.mark.slow  # over 10 s: kept out of the quick loop
def test_expired_token_means_one_reauth_not_a_451(own_swift, tmp_path):
    ini = write_ini(tmp_path / "swiftdrop.ini", own_swift)
    create_containers(ini)
    with FilterProcess(ini, tmp_path, "--log-target", "stderr", *FULL_REPLY) as proc:
        stored_location(send(proc.address, "s@o.test", ["a@example.com"], b"one\r\n"))
        time.sleep(4)  # tokens of own_swift live 3 s
        stored_location(send(proc.address, "s@o.test", ["a@example.com"], b"two\r\n"))
        log = proc.log()
    assert log.count("authenticated test:tester ") == 2
    assert "attempt 1 failed: Swift answered 401" in log


def test_bad_config_stops_the_service_naming_file_section_and_key(tmp_path, swift):
    ini = write_ini(tmp_path / "swiftdrop.ini", swift, auth_version="4")
    result = run_swiftdrop("serve", "--config", str(ini), "--listen", f"127.0.0.1:{reserve_port()}",
                           "--log-target", "stderr")
    assert result.returncode == 78
    assert f"{ini}: [DEFAULT] auth_version: '4' is not one of 1, 2, 3" in result.stderr


def test_non_loopback_listen_address_is_refused(swift_ini):
    result = run_swiftdrop("serve", "--config", str(swift_ini), "--listen", "0.0.0.0:2525",
                           "--log-target", "stderr")
    assert result.returncode == 64
    assert "loopback only" in result.stderr


def test_check_reports_every_section(swift, swift_ini, tmp_path):
    result = run_swiftdrop("check", "--config", str(swift_ini))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["[DEFAULT]", "[PRODUCTION]", "[BILLING]"]
    assert all(line.startswith("ok ") for line in lines)

    broken = write_ini(tmp_path / "broken.ini", swift, create_container="false")
    text = broken.read_text().replace("key = testing2", "key = wrong")
    broken.write_text(text.replace("container = billing", "container = no-such-container"))
    result = run_swiftdrop("check", "--config", str(broken))
    assert result.returncode == 1
    status = [line.split()[0] for line in result.stdout.splitlines()]
    assert status == ["ok", "FAIL", "FAIL"]
    assert "wrong" not in result.stdout + result.stderr


def test_socket_activation_with_systemd_socket_activate(swift, swift_ini, tmp_path):
    port = reserve_port()
    process = FilterProcess(swift_ini, tmp_path, "--log-target", "stderr", *FULL_REPLY,
                            port=port,
                            launcher=["systemd-socket-activate", "-l", f"127.0.0.1:{port}"])
    with process:
        container, name = stored_location(send(("127.0.0.1", port), "s@o.test",
                                               ["a@example.com"], b"activated\r\n"))
        assert get(swift, "test", container, name)[1] == b"activated\r\n"
        assert f"serving on ('127.0.0.1', {port})" in process.log()


def test_sigterm_lets_a_session_in_progress_finish(swift, swift_ini, tmp_path):
    with FilterProcess(swift_ini, tmp_path, "--log-target", "stderr", *FULL_REPLY) as process:
        client = socket.create_connection(process.address, timeout=30)
        reader = client.makefile("rb")
        reader.readline()
        for command in (b"EHLO x", b"MAIL FROM:<s@o.test>", b"RCPT TO:<a@example.com>",
                        b"DATA"):
            client.sendall(command + b"\r\n")
            while reader.readline()[3:4] == b"-":
                pass
        client.sendall(b"Subject: during shutdown\r\n")
        process.process.terminate()
        deadline = time.monotonic() + 15
        while "waiting for 1 session(s) to finish" not in process.log():
            assert time.monotonic() < deadline, "the filter did not act on SIGTERM"
            time.sleep(0.05)
        client.sendall(b"\r\nstill stored\r\n.\r\n")
        reply = reader.readline().decode()
        assert reply.startswith("250 2.0.0 Ok: stored as fallback/cur/")
        client.sendall(b"QUIT\r\n")
        assert reader.readline().startswith(b"221")
        reader.close()
        client.close()
        assert process.process.wait(30) == 0
        with pytest.raises(OSError):
            wait_for_port(process.port, timeout=1)


class _RecordingSession:
    """Answers one line with its thread's TID (not reused at once), once `release` is set."""

    def __init__(self, connection, release):
        self.connection, self.release = connection, release

    def serve(self):
        self.connection.recv(16)
        assert self.release.wait(30)
        self.connection.sendall(b"%d\n" % threading.get_native_id())


def test_a_worker_serves_the_next_connection_and_max_connections_bounds_them():
    release = threading.Event()
    listener = bind_listener("127.0.0.1:0")
    server = Server([listener], lambda connection: _RecordingSession(connection, release),
                    max_connections=2)
    runner = threading.Thread(target=server.run, kwargs={"grace": 5}, daemon=True)
    runner.start()

    def served_by(client):
        client.sendall(b"x")
        return int(client.makefile("rb").readline())

    def wait_until_idle():
        """The client has its answer a moment before the worker is back to waiting."""
        deadline = time.monotonic() + 15
        while not server.idle_workers:
            assert time.monotonic() < deadline, "the worker did not wait for more"
            time.sleep(0.01)

    try:
        release.set()
        one_after_another = []
        for _ in range(3):
            with socket.create_connection(listener.getsockname(), timeout=30) as client:
                one_after_another.append(served_by(client))
            wait_until_idle()
        assert len(set(one_after_another)) == 1, "each connection started a thread of its own"

        release.clear()
        clients = [socket.create_connection(listener.getsockname(), timeout=30)
                   for _ in range(3)]
        for client in clients:
            client.sendall(b"x")
        deadline = time.monotonic() + 15
        while server.active_sessions < 2:
            assert time.monotonic() < deadline, "two connections were not taken"
            time.sleep(0.01)
        assert server.active_sessions == 2  # the third waits in the backlog
        release.set()
        together = [int(client.makefile("rb").readline()) for client in clients]
        assert len(set(together[:2])) == 2, "two sessions at once shared a thread"
        assert one_after_another[0] in together, "the idle worker was not given a connection"
        for client in clients:
            client.close()
    finally:
        release.set()
        server.stop()
        runner.join(10)
    assert not runner.is_alive()


def test_a_sigterm_the_kernel_gave_another_thread_stops_the_accept_loop():
    """Python runs a signal's handler in the main thread, and only once it runs Python code.

    With no heartbeat the accept loop's select has no timeout: before the
    wakeup fd, a SIGTERM that landed on another thread was not seen until a
    connection came. pthread_kill lands it on another thread once the main
    one sleeps in epoll_wait; the fallback stop() after 30 s, if it was
    needed, fails the test rather than hanging it.
    """
    server = Server([bind_listener("127.0.0.1:0")], lambda connection: None)
    stops = []
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    server.stop_on_signals(lambda: stops.append("signal"))

    def stop_anyway():
        stops.append("fallback")
        server.stop()

    fallback = threading.Timer(30, stop_anyway)

    main_thread = threading.get_native_id()

    def signal_from_here():
        # Only a main thread asleep in select shows the difference: a signal
        # that comes while it still runs Python code is handled at once.
        wchan = pathlib.Path(f"/proc/self/task/{main_thread}/wchan")
        deadline = time.monotonic() + 30
        while "epoll_wait" not in wchan.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        fallback.start()

    try:
        threading.Thread(target=signal_from_here).start()
        server.run(grace=1)
    finally:
        fallback.cancel()
        signal.set_wakeup_fd(-1)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert stops == ["signal"]


def test_journald_entry_has_structured_fields(swift, swift_ini, tmp_path, journald):
    """The default 250 names an opaque id only; the journal leads from it to the object."""
    with FilterProcess(swift_ini, tmp_path, "--log-target", "journal") as process:
        code, text = send(process.address, "s@o.test", ["billing@example.com"],
                          b"journal me\r\n")
        pid = process.process.pid
    assert code == 250
    match = re.fullmatch(r"2\.0\.0 Ok: stored, id ([0-9a-f]{16})", text)
    assert match, text
    assert "billing" not in text and "cur/" not in text and str(pid) not in text
    entries = journald.entries(SWIFTDROP_ID=match.group(1))
    assert len(entries) == 1
    entry = entries[0]
    assert entry["_PID"] == str(pid)
    assert entry["SWIFTDROP_CONTAINER"] == "billing"
    assert NAME.match(entry["SWIFTDROP_OBJECT"])
    assert get(swift, "test", "billing", entry["SWIFTDROP_OBJECT"])[1] == b"journal me\r\n"
    assert entry["SWIFTDROP_SIZE"] == str(len(b"journal me\r\n"))
    assert entry["SWIFTDROP_RESULT"] == "stored"
    assert int(entry["SWIFTDROP_DURATION_MS"]) >= 0
    assert entry["PRIORITY"] == "6" and entry["SYSLOG_IDENTIFIER"] == "swiftdrop"
    assert "testing" not in journald.text_of(process)


def failure_journal_entry(ini, workdir, journald, body):
    """Send `body` through a filter logging to the journal; it must fail with 451.

    Returns the message's one journal entry (priority err) and the filter's process.
    """
    with FilterProcess(ini, workdir, "--log-target", "journal") as process:
        code, _ = send(process.address, "s@o.test", ["a@example.com"], body)
    assert code == 451
    [entry] = journald.of_process(process, SWIFTDROP_RESULT="failed")
    assert entry["PRIORITY"] == "3"
    return entry, process


def test_failure_is_a_journal_entry_at_error_priority(swift, tmp_path, journald):
    ini = write_ini(tmp_path / "swiftdrop.ini", swift, container="never-created",
                    create_container="false")
    entry, _ = failure_journal_entry(ini, tmp_path, journald, b"fails\r\n")
    assert entry["SWIFTDROP_SWIFT_STATUS"] == "404"
    assert entry["SWIFTDROP_TRANS_ID"].startswith("tx")
    assert entry["SWIFTDROP_SECTION"] == "DEFAULT"
    assert entry["SWIFTDROP_CONTAINER"] == "never-created"
    assert entry["SWIFTDROP_REASON"] == "Swift answered 404 Not Found"
    assert "Swift answered 404" in entry["MESSAGE"]
    for field in ("ID", "OBJECT", "SIZE", "DURATION_MS", "MESSAGE_ID", "RECIPIENTS"):
        assert f"SWIFTDROP_{field}" in entry, field


def test_check_config_only_needs_no_swift(tmp_path):
    ini = tmp_path / "swiftdrop.ini"
    ini.write_text("[DEFAULT]\ncontainer = c\nauthurl = http://127.0.0.1:9/auth/v1.0\n"
                   "user = u\nkey = k\n")
    result = run_swiftdrop("check", "--config-only", "--config", str(ini))
    assert (result.returncode, result.stdout.split()[:3]) == (0, ["ok", "[DEFAULT]", "container"])
    ini.write_text(ini.read_text() + "retries = many\n")
    result = run_swiftdrop("check", "--config-only", "--config", str(ini))
    assert result.returncode == 78
    assert "[DEFAULT] retries: 'many' is not a number" in result.stderr


def test_listen_on_a_unix_socket(swift, swift_ini, tmp_path):
    path = tmp_path / "filter.sock"
    process = subprocess.Popen(
        [*swiftdrop_command("serve", "--config", str(swift_ini), "--listen", f"unix:{path}",
                            "--log-target", "stderr")], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not path.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        client = smtplib.SMTP()
        client.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.sock.connect(str(path))
        client.file = None
        assert client.getreply()[0] == 220
        client.sendmail("s@o.test", ["a@example.com"], b"over a unix socket\r\n")
        client.quit()
        names = [o["name"] for o in swift.connection().get_container("fallback")[1]]
        stored = [swift.connection().get_object("fallback", name)[1] for name in names]
        assert b"over a unix socket\r\n" in stored
    finally:
        process.terminate()
        process.wait(30)


class WebhookReceiver(http.server.BaseHTTPRequestHandler):
    """Records the JSON bodies POSTed to it."""

    received: typing.ClassVar[list] = []

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_ten_failures_in_a_row_send_one_notice(swift, tmp_path):
    ini = write_ini(tmp_path / "swiftdrop.ini", swift, container="not-there",
                    create_container="false")
    WebhookReceiver.received = []
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WebhookReceiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    try:
        # The interval is long enough for ten failures on a loaded machine too.
        interval = 12
        with FilterProcess(ini, tmp_path, "--alert-webhook", url, "--alert-interval",
                           str(interval), "--log-target", "stderr", *FULL_REPLY) as process:
            started = time.monotonic()
            for _ in range(10):
                assert send(process.address, "s@o.test", ["a@example.com"], b"x\r\n")[0] == 451
            assert time.monotonic() - started < interval, "the test needs all ten within it"
            deadline = time.monotonic() + 10
            while not WebhookReceiver.received and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(WebhookReceiver.received) == 1
            first = WebhookReceiver.received[0]
            assert (first["section"], first["container"], first["swift_status"]) == (
                "DEFAULT", "not-there", 404)
            assert first["transaction_id"].startswith("tx")
            assert first["suppressed_since_last_notice"] == 0
            time.sleep(max(0.0, started + interval + 0.2 - time.monotonic()))
            assert send(process.address, "s@o.test", ["a@example.com"], b"x\r\n")[0] == 451
            deadline = time.monotonic() + 10
            while len(WebhookReceiver.received) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert WebhookReceiver.received[1]["suppressed_since_last_notice"] == 9
            assert "testing" not in json.dumps(WebhookReceiver.received)
    finally:
        receiver.shutdown()


@pytest.mark.slow  # over 10 s: kept out of the quick loop
@pytest.mark.parametrize(("mode", "arg", "body"), [
    ("drip", 1, b"Subject: dripped\r\n\r\nx\r\n"),  # the answer a byte a second
    ("stall", 2048, b"Subject: stalled\r\n\r\n" + b"s" * 200_000 + b"\r\n"),  # 2 KB/s up
])
def test_a_swift_that_drips_or_stalls_costs_the_deadline_and_no_more(
        swift, tmp_path, mode, arg, body):
    """Each read or write succeeds, so no socket timeout trips: the deadline must, whole.

    store_timeout + 1 s is the bound (the timing assertion issue 24 asks
    for); without a deadline over the whole request the drip held the
    reply for minutes, past Postfix's smtpd_proxy_timeout.
    """
    container = f"deadline-{mode}"
    swift.connection().put_container(container)
    with FaultProxy(swift.port) as proxy:
        ini = tmp_path / "swiftdrop.ini"
        ini.write_text(f"[DEFAULT]\nrecipient = DEFAULT\ncontainer = {container}\n"
                       f"authurl = {proxy.auth_url}\nuser = test:tester\nkey = testing\n"
                       "timeout = 3\n")
        ini.chmod(0o640)
        with FilterProcess(ini, tmp_path, "--store-timeout", "6", "--log-target", "stderr",
                           *FULL_REPLY) as process:
            stored_location(send(process.address, "s@o.test", ["a@example.com"], b"w\r\n"))
            proxy.set_mode(mode, arg, methods=("PUT",))
            started = time.monotonic()
            code, _ = send(process.address, "s@o.test", ["a@example.com"], body)
            took = time.monotonic() - started
            proxy.set_mode("pass")
            log = process.log()
    assert code == 451
    assert took <= 6 + 1, f"the reply took {took:.1f} s"
    assert re.search(r"ERROR: not stored cur/\S+ in \[DEFAULT\] container deadline-\w+: "
                     r"Swift at http://127\.0\.0\.1:\d+ did not answer within [\d.]+ s", log), log


@pytest.mark.slow  # over 10 s: kept out of the quick loop
def test_a_silent_swift_costs_the_deadline_and_the_cleanup_happens_after_the_reply(
        swift, tmp_path):
    """Two destinations; the second Swift holds its answer back past the deadline.

    The reply (451) must not wait for that, nor for removing the first copy:
    store_timeout + 1 s is the bound issue 12 asks for (hence the timing
    assertion), and the removal happens in the background and is logged.
    """
    swift.connection().put_container("cleanup-first")
    swift.connection().put_container("cleanup-silent")
    with FaultProxy(swift.port) as proxy:
        ini = tmp_path / "swiftdrop.ini"
        ini.write_text(
            "[DEFAULT]\nrecipient = DEFAULT\ncontainer = cleanup-first\n"
            f"authurl = {swift.auth_url}\nuser = test:tester\nkey = testing\ntimeout = 10\n"
            "[SILENT]\nrecipient = silent@example.com\ncontainer = cleanup-silent\n"
            f"authurl = {proxy.auth_url}\n")
        ini.chmod(0o640)
        with FilterProcess(ini, tmp_path, "--store-timeout", "4", "--log-target", "stderr",
                           *FULL_REPLY) as process:
            stored_location(send(process.address, "s@o.test", ["a@example.com",
                                                               "silent@example.com"], b"w\r\n"))
            proxy.set_mode("delay", 30, methods=("PUT",))
            started = time.monotonic()
            code, _ = send(process.address, "s@o.test", ["a@example.com", "silent@example.com"],
                           b"Subject: half stored\r\n\r\nx\r\n")
            took = time.monotonic() - started
            deadline = time.monotonic() + 30
            while "after the reply (451)" not in process.log():
                assert time.monotonic() < deadline, process.log()
                time.sleep(0.1)
            proxy.set_mode("pass")
            log = process.log()
    assert code == 451
    assert took <= 4 + 1, f"the reply took {took:.1f} s"
    assert re.search(r"ERROR: not stored cur/\S+ in \[SILENT\] container cleanup-silent: "
                     r"Swift at http://127\.0\.0\.1:\d+ did not answer within [\d.]+ s", log)
    assert re.search(r"INFO: removed cleanup-first/cur/\S+ after the reply \(451\)", log)
    names = [o["name"] for o in swift.connection().get_container("cleanup-first")[1]]
    assert len(names) == 1  # the warm-up only
