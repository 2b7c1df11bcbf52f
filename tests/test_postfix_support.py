"""Real traffic through tests.support.postfix.PostfixInstance.

The before-queue proxy filter is played by `TCPResponder`/`UnixResponder`, a
minimal SMTP server written with plain `socketserver` (test scaffolding only,
not a real MTA).  Run with ``-s`` to see the command sequence Postfix sends to
the proxy.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import smtplib
import socket
import socketserver
import subprocess
import threading
import time

import pytest

from tests.support.ports import reserve_port
from tests.support.postfix import (
    HOST,
    PostfixError,
    PostfixInstance,
    make_workdir,
    postfix_instance,
    untraversable_ancestors,
    wait_reaped,
)

# Runs private Postfix instances: left out of the quick loop. Postfix is
# installed by scripts/bootstrap; without it these fail rather than skip.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="Postfix's master must start as root"),
]

DOMAIN = "relay.test"
RECIPIENT = f"user@{DOMAIN}"
SENDER = "sender@example.org"
STORED = "250 2.0.0 Ok: stored as test"
XFORWARD = "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"
DEFAULT_KEYWORDS = ["SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]


# --------------------------------------------------------------- responder
@dataclasses.dataclass
class Message:
    mail_from: str
    rcpts: list[str]
    xforward: list[str]
    data: bytes  # after removing the transparency dot
    raw: bytes = b""  # as on the wire, dot-stuffed, without the final "."


@dataclasses.dataclass
class Session:
    commands: list[str] = dataclasses.field(default_factory=list)
    messages: list[Message] = dataclasses.field(default_factory=list)
    closed: threading.Event = dataclasses.field(default_factory=threading.Event)


class ResponderHandler(socketserver.StreamRequestHandler):
    timeout = 60

    def reply(self, *lines: str) -> None:
        self.wfile.write("".join(line + "\r\n" for line in lines).encode())

    def handle(self) -> None:
        server: ResponderMixin = self.server  # type: ignore[assignment]
        session = Session()
        server.add_session(session)
        try:
            self.converse(server, session)
        except OSError:
            pass
        finally:
            session.closed.set()
            with server.cond:
                server.cond.notify_all()

    def converse(self, server: ResponderMixin, session: Session) -> None:
        self.reply("220 proxy.test ESMTP test responder")
        mail_from, rcpts, xforward = "", [], []
        while line := self.rfile.readline(65536):
            command = line.rstrip(b"\r\n").decode("utf-8", "replace")
            session.commands.append(command)
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                keywords = ["proxy.test", *server.ehlo_keywords]
                self.reply(*[f"250-{k}" for k in keywords[:-1]], f"250 {keywords[-1]}")
            elif verb == "HELO":
                self.reply("250 proxy.test")
            elif verb == "XFORWARD":
                xforward.append(command)
                self.reply("250 2.0.0 Ok")
            elif verb == "MAIL":
                mail_from, rcpts = command, []
                self.reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                rcpts.append(command)
                self.reply("250 2.1.5 Ok")
            elif verb == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                raw = []
                while (data_line := self.rfile.readline(1 << 20)) not in (b".\r\n", b""):
                    raw.append(data_line)
                message = Message(
                    mail_from=mail_from,
                    rcpts=rcpts,
                    xforward=xforward,
                    data=b"".join(x[1:] if x.startswith(b".") else x for x in raw),
                    raw=b"".join(raw),
                )
                session.messages.append(message)
                self.reply(server.data_reply)
                with server.cond:
                    server.cond.notify_all()
                mail_from, rcpts, xforward = "", [], []
            elif verb == "RSET":
                mail_from, rcpts, xforward = "", [], []
                self.reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                self.reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("502 5.5.2 Error: command not recognized")


class ResponderMixin:
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def init_state(self) -> None:
        self.cond = threading.Condition()
        self.sessions: list[Session] = []
        self.ehlo_keywords = list(DEFAULT_KEYWORDS)
        self.data_reply = STORED

    def reset(self) -> None:
        with self.cond:
            self.sessions.clear()
        self.ehlo_keywords = list(DEFAULT_KEYWORDS)
        self.data_reply = STORED

    def add_session(self, session: Session) -> None:
        with self.cond:
            self.sessions.append(session)

    @property
    def messages(self) -> list[Message]:
        with self.cond:
            return [m for s in self.sessions for m in s.messages]

    def wait_messages(self, count: int = 1, timeout: float = 15) -> list[Message]:
        with self.cond:
            if not self.cond.wait_for(
                lambda: sum(len(s.messages) for s in self.sessions) >= count, timeout
            ):
                raise AssertionError(f"responder got no message, sessions={self.sessions}")
        return self.messages

    def wait_closed(self, timeout: float = 15) -> list[Session]:
        deadline = time.monotonic() + timeout
        for session in list(self.sessions):
            assert session.closed.wait(max(0, deadline - time.monotonic()))
        return list(self.sessions)

    def serve_in_thread(self) -> None:
        threading.Thread(target=self.serve_forever, daemon=True).start()  # type: ignore[attr-defined]


class TCPResponder(ResponderMixin, socketserver.ThreadingTCPServer):
    def __init__(self, address: tuple[str, int] = (HOST, 0)) -> None:
        self.init_state()
        super().__init__(address, ResponderHandler)

    @property
    def proxy_filter(self) -> str:
        return f"inet:{HOST}:{self.server_address[1]}"


class UnixResponder(ResponderMixin, socketserver.ThreadingUnixStreamServer):
    def __init__(self, path: pathlib.Path) -> None:
        self.init_state()
        super().__init__(str(path), ResponderHandler)
        # smtpd connects as user "postfix": connect(2) needs write permission
        os.chmod(path, 0o666)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def responder():
    server = TCPResponder()
    server.serve_in_thread()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def postfix(responder):
    with postfix_instance(
        proxy_filter=responder.proxy_filter,
        relay_domains=[DOMAIN, "wild.test"],
        recipients=[RECIPIENT, f"other@{DOMAIN}", "@wild.test"],
    ) as instance:
        print(f"\n{instance!r} started in {instance.start_seconds:.2f}s")
        yield instance


@pytest.fixture
def proxy(responder):
    responder.reset()
    yield responder
    responder.reset()


def smtp_client(instance: PostfixInstance) -> smtplib.SMTP:
    client = smtplib.SMTP(HOST, instance.smtp_port, local_hostname="client.test", timeout=30)
    client.ehlo()
    return client


def message(subject: str) -> bytes:
    return (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@client.test>\r\n\r\nHello.\r\n"
    ).encode()


def send(instance, rcpts, body=None):
    """MAIL/RCPT.../DATA; returns ([rcpt replies], data reply or None)."""
    with smtp_client(instance) as client:
        assert client.mail(SENDER)[0] == 250
        replies = [client.rcpt(rcpt) for rcpt in rcpts]
        if not any(code == 250 for code, _ in replies):
            return replies, None
        return replies, client.data(body or message("test"))


# ------------------------------------------------------------------- tests
def test_instance_layout(postfix):
    assert postfix.postconf("-h", "queue_directory").strip() == str(postfix.queue_dir)
    assert postfix.postconf("-h", "mynetworks").strip() == ""
    assert postfix.postconf("-xh", "smtpd_proxy_ehlo").strip() == "mx.swiftdrop.test"
    assert "/etc/postfix" not in (postfix.config_dir / "main.cf").read_text()
    assert postfix.check_warnings == []
    log = postfix.wait_for_log(r"postfix/master\[\d+\]: daemon started")
    assert f"configuration {postfix.config_dir}" in log[0]
    with socket.create_connection((HOST, postfix.smtp_port)) as sock:
        assert sock.recv(100) == b"220 mx.swiftdrop.test ESMTP\r\n"
    # the only listener is smtpd on 127.0.0.1:PORT (no "smtp inet" on port 25)
    inet = [line for line in postfix.postconf("-M").splitlines() if " inet " in line]
    assert [line.split()[:2] for line in inet] == [[f"{HOST}:{postfix.smtp_port}", "inet"]]


def test_a_listed_recipient_reaches_the_proxy(postfix, proxy):
    replies, data_reply = send(postfix, [RECIPIENT], message("test a"))
    assert replies == [(250, b"2.1.5 Ok")]
    assert data_reply == (250, b"2.0.0 Ok: stored as test")
    [msg] = proxy.wait_messages()
    # speed_adjust replays the client's MAIL/RCPT/DATA verbatim: smtplib sends
    # lower-case verbs, so the filter must parse commands case-insensitively.
    assert msg.mail_from == f"mail FROM:<{SENDER}>"
    assert msg.rcpts == [f"rcpt TO:<{RECIPIENT}>"]
    first = msg.data.partition(b"\r\n")[0]
    assert first.startswith(b"Received: from client.test (localhost [127.0.0.1])")
    assert b"by mx.swiftdrop.test (Postfix) with ESMTP" in msg.data.split(b"\r\nFrom:")[0]
    assert msg.data.endswith(message("test a"))
    print("\nReceived header from Postfix:\n" + msg.data.split(b"\r\nFrom:")[0].decode())


def test_b_unknown_recipient_in_relay_domain_is_550(postfix, proxy):
    replies, data_reply = send(postfix, [f"nobody@{DOMAIN}", RECIPIENT, "any@wild.test"])
    assert replies[0] == (
        550,
        f"5.1.1 <nobody@{DOMAIN}>: Recipient address rejected: "
        "User unknown in relay recipient table".encode(),
    )
    assert replies[1:] == [(250, b"2.1.5 Ok"), (250, b"2.1.5 Ok")]
    assert data_reply[0] == 250
    [msg] = proxy.wait_messages()
    assert msg.rcpts == [f"rcpt TO:<{RECIPIENT}>", "rcpt TO:<any@wild.test>"]


def test_c_foreign_domain_is_relay_access_denied(postfix, proxy):
    replies, data_reply = send(postfix, ["someone@example.net"])
    assert replies == [(554, b"5.7.1 <someone@example.net>: Relay access denied")]
    assert data_reply is None
    postfix.wait_for_log(r"reject: RCPT from localhost\[127\.0\.0\.1\]: 554 5\.7\.1")
    assert proxy.messages == []


def test_d_proxy_tempfail_at_data_end_is_passed_on(postfix, proxy):
    proxy.data_reply = "451 4.3.0 Filter: try again later"
    replies, data_reply = send(postfix, [RECIPIENT])
    assert replies == [(250, b"2.1.5 Ok")]
    code, text = data_reply
    assert 400 <= code < 500
    assert (code, text) == (451, b"4.3.0 Filter: try again later")
    postfix.wait_for_log(r"proxy-reject: END-OF-MESSAGE: 451 4\.3\.0 Filter: try again later")


def test_d2_proxy_down_is_tempfail(postfix, proxy):
    port = reserve_port()
    postfix.extra_main["smtpd_proxy_filter"] = f"inet:{HOST}:{port}"
    try:
        postfix.reload()
        _, (code, text) = send(postfix, [RECIPIENT])
        assert (code, text) == (451, b"4.3.0 Error: queue file write error")
    finally:
        del postfix.extra_main["smtpd_proxy_filter"]
        postfix.reload()
    assert send(postfix, [RECIPIENT])[1][0] == 250


def test_e_swaks(postfix, proxy):
    proc = subprocess.run(
        [
            "swaks", "--server", f"{HOST}:{postfix.smtp_port}", "--helo", "client.test",
            "--from", SENDER, "--to", RECIPIENT, "--header", "Subject: swaks test",
        ],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"<-  {STORED}" in proc.stdout
    [msg] = proxy.wait_messages()
    assert b"Subject: swaks test" in msg.data
    assert msg.data.startswith(b"Received: from client.test (localhost [127.0.0.1])")
    assert msg.mail_from == f"MAIL FROM:<{SENDER}>"  # swaks: upper case, replayed as is


def test_f_command_sequence_with_xforward(postfix, proxy):
    proxy.ehlo_keywords = [*DEFAULT_KEYWORDS, XFORWARD]
    send(postfix, [RECIPIENT, f"other@{DOMAIN}"], message("test f"))
    proxy.wait_messages()
    [session] = proxy.wait_closed()
    print("\nPostfix -> proxy filter (XFORWARD advertised):")
    for command in session.commands:
        print("   ", command)
    verbs = [c.split(" ", 1)[0].upper() for c in session.commands]
    assert session.commands[0] == "EHLO mx.swiftdrop.test"  # smtpd_proxy_ehlo
    assert "XFORWARD" in verbs
    first_mail = verbs.index("MAIL")
    assert set(verbs[1:first_mail]) == {"XFORWARD"}
    assert verbs[first_mail:] == ["MAIL", "RCPT", "RCPT", "DATA", "QUIT"]
    assert session.commands[first_mail:] == [
        f"mail FROM:<{SENDER}>",
        f"rcpt TO:<{RECIPIENT}>",
        f"rcpt TO:<other@{DOMAIN}>",
        "data",
        "QUIT",
    ]
    attrs = dict(
        item.split("=", 1) for c in session.commands if c.startswith("XFORWARD ")
        for item in c.split()[1:]
    )  # fmt: skip
    assert attrs["ADDR"] == "127.0.0.1"
    assert attrs["NAME"] == "localhost"
    assert attrs["HELO"] == "client.test"
    assert attrs["PROTO"] == "ESMTP"
    # REMOTE because main.cf empties local_header_rewrite_clients (its default
    # permit_inet_interfaces would make 127.0.0.1 a LOCAL source)
    assert attrs["SOURCE"] == "REMOTE"
    assert attrs["IDENT"] == "[UNAVAILABLE]"  # no queue id before the queue
    assert attrs["PORT"].isdigit()
    assert set(attrs) == set(XFORWARD.split()[1:])


def test_f2_command_sequence_without_xforward(postfix, proxy):
    send(postfix, [RECIPIENT])
    proxy.wait_messages()
    [session] = proxy.wait_closed()
    print("\nPostfix -> proxy filter (no XFORWARD advertised):")
    for command in session.commands:
        print("   ", command)
    verbs = [c.split(" ", 1)[0].upper() for c in session.commands]
    assert verbs == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]


def test_f3_mail_and_rcpt_parameters_are_replayed_verbatim(postfix, proxy):
    """Postfix advertises DSN/SMTPUTF8/8BITMIME/SIZE to clients and passes their
    ESMTP parameters on unchanged, even when the filter advertised none of them."""
    proxy.ehlo_keywords = []
    with smtp_client(postfix) as client:
        mail_options = ["SIZE=123", "BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=xyz"]
        assert client.mail(SENDER, mail_options)[0] == 250
        assert client.rcpt(RECIPIENT, ["NOTIFY=NEVER", f"ORCPT=rfc822;{RECIPIENT}"])[0] == 250
        assert client.data(message("test f3"))[0] == 250
    proxy.wait_messages()
    [session] = proxy.wait_closed()
    print("\nPostfix -> proxy filter (client used ESMTP parameters):")
    for command in session.commands:
        print("   ", command)
    assert session.commands[1:] == [
        f"mail FROM:<{SENDER}> SIZE=123 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=xyz",
        f"rcpt TO:<{RECIPIENT}> NOTIFY=NEVER ORCPT=rfc822;{RECIPIENT}",
        "data",
        "QUIT",
    ]


def test_g_smtp_source_file(postfix, proxy, tmp_path):
    """``smtp-source -m 1 -s 1 -M HELO -f FROM -t TO -F FILE 127.0.0.1:PORT``.

    -F sends the file as header+body (no headers added), each LF-terminated
    line with CRLF, dot-stuffed, plus one extra empty line before the final
    "."; it speaks HELO (not EHLO), hence "with SMTP" in Received:.
    """
    content = (
        "From: <sender@example.org>\n"
        "To: <user@relay.test>\n"
        "Subject: smtp-source -F\n"
        "\n"
        "first line\n"
        ".leading dot\n"
        "..two dots\n"
        ".\n"
        "after a lone dot\n"
    )
    path = tmp_path / "message.txt"
    path.write_text(content)
    wire = content.replace("\n", "\r\n").encode() + b"\r\n"

    def smtp_source(port: int) -> None:
        proc = subprocess.run(
            [
                "smtp-source", "-m", "1", "-s", "1", "-M", "client.test",
                "-f", SENDER, "-t", RECIPIENT, "-F", str(path), f"{HOST}:{port}",
            ],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr

    # 1. straight to the responder: what smtp-source itself puts on the wire
    smtp_source(proxy.server_address[1])
    [direct] = proxy.wait_messages()
    [session] = proxy.wait_closed()
    assert session.commands == [
        "HELO client.test",
        f"MAIL FROM:<{SENDER}>",
        f"RCPT TO:<{RECIPIENT}>",
        "DATA",
        "QUIT",
    ]
    assert direct.raw == wire.replace(b"\n.", b"\n..")  # dot-stuffed by smtp-source
    assert direct.data == wire
    proxy.reset()

    # 2. through Postfix: un-stuffed by smtpd, re-stuffed towards the proxy
    smtp_source(postfix.smtp_port)
    [msg] = proxy.wait_messages()
    [session] = proxy.wait_closed()
    print("\nsmtp-source -F via Postfix, as received by the proxy:\n" + msg.data.decode())
    assert session.commands[0] == "EHLO mx.swiftdrop.test"
    assert session.commands[1:] == [
        f"MAIL FROM:<{SENDER}>",
        f"RCPT TO:<{RECIPIENT}>",
        "DATA",
        "QUIT",
    ]
    received, _, rest = msg.data.partition(b"\r\nFrom: ")
    assert received.startswith(b"Received: from client.test (localhost [127.0.0.1])\r\n")
    assert b"by mx.swiftdrop.test (Postfix) with SMTP\r\n" in received
    assert b"From: " + rest == wire
    assert msg.raw.endswith(wire.replace(b"\n.", b"\n.."))
    postfix.wait_for_log(r"helo=<client\.test>")


def test_reload_picks_up_new_recipients(postfix, proxy):
    late = f"late@{DOMAIN}"
    assert send(postfix, [late])[0][0][0] == 550
    postfix.recipients.append(late)
    try:
        postfix.reload()
        replies, data_reply = send(postfix, [late])
        assert replies == [(250, b"2.1.5 Ok")]
        assert data_reply[0] == 250
    finally:
        postfix.recipients.remove(late)
        postfix.reload()
    assert send(postfix, [late])[0][0][0] == 550


def test_unknown_main_cf_parameter_is_refused():
    instance = PostfixInstance(
        make_workdir(),
        proxy_filter="inet:127.0.0.1:1",
        relay_domains=[DOMAIN],
        recipients=[],
        extra_main={"smtpd_proxy_timout": "10s"},
    )
    try:
        with pytest.raises(PostfixError, match="unused parameter: smtpd_proxy_timout"):
            instance.start()
    finally:
        shutil.rmtree(instance.workdir)


def test_parallel_instances_with_unix_proxy_sockets(postfix):
    """Two more instances next to the module one, both proxying over unix: sockets.

    * unix:private/NAME is resolved relative to the queue directory;
    * unix:/abs/path is used as is.
    """
    sockdir = make_workdir("swiftdrop-sock-")
    relative = PostfixInstance(
        make_workdir(),
        proxy_filter="unix:private/swiftdrop-proxy",
        relay_domains=[DOMAIN],
        recipients=[RECIPIENT],
        extra_main={"smtpd_proxy_timeout": "30s"},
    )
    absolute = PostfixInstance(
        make_workdir(),
        proxy_filter=f"unix:{sockdir}/proxy.sock",
        relay_domains=[DOMAIN],
        recipients=[RECIPIENT],
    )
    assert relative.proxy_socket_path == relative.queue_dir / "private" / "swiftdrop-proxy"
    assert absolute.proxy_socket_path == sockdir / "proxy.sock"
    servers = []
    try:
        with relative, absolute:
            assert len({postfix.smtp_port, relative.smtp_port, absolute.smtp_port}) == 3
            assert relative.postconf("-h", "smtpd_proxy_timeout").strip() == "30s"
            for instance in (relative, absolute):
                server = UnixResponder(instance.proxy_socket_path)
                server.serve_in_thread()
                servers.append(server)
                _, data_reply = send(instance, [RECIPIENT], message(f"{instance.smtp_port}"))
                assert data_reply == (250, b"2.0.0 Ok: stored as test")
                [msg] = server.wait_messages()
                assert msg.data.endswith(message(f"{instance.smtp_port}"))
            assert _port_open(postfix.smtp_port)
        for instance in (relative, absolute):
            assert not _port_open(instance.smtp_port)
            assert _live_processes_in(instance.workdir) == []
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for path in (sockdir, relative.workdir, absolute.workdir):
            shutil.rmtree(path, ignore_errors=True)


def test_untraversable_workdir_is_refused_or_fixed(tmp_path):
    # pytest's /tmp/pytest-of-root is 0700: daemons running as "postfix"
    # could not reach data_directory, the maillog or unix: sockets there
    if untraversable_ancestors(tmp_path):  # unless --basetemp points elsewhere
        with pytest.raises(PermissionError, match="make_workdir"):
            PostfixInstance(
                tmp_path / "pf", proxy_filter="inet:127.0.0.1:1", relay_domains=[], recipients=[]
            )
    base = make_workdir()
    try:
        (base / "private").mkdir(mode=0o700)
        instance = PostfixInstance(
            base / "private" / "pf",
            proxy_filter="inet:127.0.0.1:1",
            relay_domains=[],
            recipients=[],
            fix_traversal=True,
        )
        assert untraversable_ancestors(instance.workdir) == []
        assert (base / "private").stat().st_mode & 0o777 == 0o701
    finally:
        shutil.rmtree(base)


def test_stop_leaves_nothing_running(responder):
    with postfix_instance(
        proxy_filter=responder.proxy_filter, relay_domains=[DOMAIN], recipients=[RECIPIENT]
    ) as instance:
        master = instance.master_pid
        assert master
        assert instance.is_running()
        assert _live_processes_in(instance.workdir)
        workdir = instance.workdir
    assert not instance.is_running()
    assert not _port_open(instance.smtp_port)
    assert _live_processes_in(workdir) == []
    assert not os.path.exists(f"/proc/{master}") or _state(master) == "Z"
    assert not workdir.exists()
    instance.stop()  # idempotent
    assert wait_reaped(10)  # PID 1 reaps the orphaned zombies, too
    assert _state(master) == "gone"


# ----------------------------------------------------------------- helpers
def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _state(pid: int) -> str:
    try:
        data = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return data[data.rfind(")") + 2 :].split()[0]


def _live_processes_in(workdir: pathlib.Path) -> list[int]:
    """Non-zombie processes whose cwd is inside `workdir` (Postfix daemons run in the queue dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(workdir)) and _state(int(entry)) not in ("Z", "gone"):
            found.append(int(entry))
    return found
