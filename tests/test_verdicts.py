"""Verdicts from a real rspamd, with a real DNS server on loopback for SPF/DKIM/DMARC.

The filter runs as a real process against the test Swift; each message comes
as Postfix sends it (XFORWARD with the real client's address and HELO), and
what counts is checked from outside: the reply, and the metadata Swift holds.
rspamd compiles its regexps at start (tens of seconds on a loaded machine),
so the end-to-end tests are marked slow.
"""

import base64
import http.server
import json
import pathlib
import threading
import time
import typing

import pytest

from swiftdrop.reception import Message
from swiftdrop.smtp import Envelope
from swiftdrop.verdicts import (
    NO_VERDICTS,
    REFUSABLE,
    RspamdClient,
    Unreadable,
    Verdicts,
    parse_answer,
)
from tests.conftest import create_containers
from tests.support.clamd import SAMPLE, SIGNATURE_NAME, ClamdServer
from tests.support.filterproc import FULL_REPLY, FilterProcess, run_swiftdrop
from tests.support.ports import reserve_port
from tests.support.rawsmtp import RawSmtp
from tests.support.rspamd import (
    CLIENT,
    DOMAIN,
    FORWARDER,
    DnsServer,
    RspamdServer,
    arc_seal,
    dkim_key,
    sign,
)
from tests.support.webhook import Webhook
from tests.test_bad_input import transaction

# Not in example.test's SPF record (which ends ~all), and on a private network:
# rspamd exempts those from its checks unless local_addrs is replaced, as the
# role does. Only a header value: nothing is sent to it.
SOFTFAIL_CLIENT = "10.0.0.20"
STRICT = f"strict.{DOMAIN}"     # its record ends -all
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
TAGGED, REFUSING, QUEUED = "verdicts-tagged", "verdicts-refusing", "verdicts-queue"
VERDICT_VALUES = {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"}


# -- pure logic: rspamd's JSON to the fixed vocabulary -------------------------------

def answer(action="no action", score=-0.5, **symbols):
    return json.dumps({"action": action, "score": score,
                       "symbols": {name: {"name": name, "score": value, **extra}
                                   for name, (value, extra) in symbols.items()}}).encode()


def test_symbols_become_the_fixed_lower_case_values():
    verdicts = parse_answer(answer(
        R_SPF_SOFTFAIL=(0.0, {}), R_DKIM_REJECT=(1.0, {}),
        DMARC_POLICY_QUARANTINE=(1.5, {"options": ["example.test : No valid SPF"]}),
        HFILTER_HELO_BAREIP=(3.0, {}), MIME_GOOD=(-0.1, {})))
    assert (verdicts.spf, verdicts.dkim, verdicts.dmarc, verdicts.dmarc_policy) == (
        "softfail", "fail", "fail", "quarantine")
    assert verdicts.score == "-0.50"
    assert verdicts.symbols == ("R_SPF_SOFTFAIL R_DKIM_REJECT DMARC_POLICY_QUARANTINE "
                                "HFILTER_HELO_BAREIP")


@pytest.mark.parametrize(("symbol", "verdict"), [
    ("ARC_ALLOW", "pass"), ("ARC_REJECT", "fail"), ("ARC_INVALID", "permerror"),
    ("ARC_DNSFAIL", "temperror"), ("ARC_NA", "none"), (None, "none")])
def test_the_arc_symbol_becomes_the_arc_verdict(symbol, verdict):
    verdicts = parse_answer(answer(**({symbol: (0.0, {})} if symbol else {})))
    assert verdicts.arc == verdict
    assert verdicts.metadata()["Arc"] == verdict
    assert verdicts.summary().endswith(f" arc={verdict}")


@pytest.mark.parametrize(("symbols", "virus", "name"), [
    ({}, "clean", None),
    ({"CLAM_VIRUS": (0.0, {"options": ["Win.Test.EICAR_HDB-1", "Other"]})}, "infected",
     "Win.Test.EICAR_HDB-1"),
    ({"CLAM_VIRUS": (0.0, {"options": ["Bad\u00e9\nName"]})}, "infected", "Bad??Name"),
    ({"CLAM_VIRUS": (0.0, {})}, "infected", None),
    ({"CLAM_VIRUS_FAIL": (0.0, {"options": ["failed to scan"]})}, "unavailable", None)])
def test_the_antivirus_symbols_become_the_virus_verdict(symbols, virus, name):
    verdicts = parse_answer(answer(**symbols), antivirus=True)
    assert (verdicts.virus, verdicts.virus_name) == (virus, name)
    assert verdicts.metadata()["Virus"] == virus
    assert verdicts.metadata().get("Virus-Name") == name


def test_without_antivirus_no_message_is_called_clean():
    verdicts = parse_answer(answer(CLAM_VIRUS=(0.0, {"options": ["Seen.Anyway"]})))
    assert verdicts.virus is None and "Virus" not in verdicts.metadata()
    assert "virus" not in verdicts.summary()


def test_a_passing_dmarc_takes_the_policy_from_the_symbol_options():
    verdicts = parse_answer(answer(DMARC_POLICY_ALLOW=(-0.5, {"options": [DOMAIN, "reject"]})))
    assert (verdicts.dmarc, verdicts.dmarc_policy, verdicts.spf) == ("pass", "reject", "none")
    assert "Dmarc-Policy" in verdicts.metadata()


@pytest.mark.parametrize("body", [
    b"<html>", b"[]", b'{"action": "explode", "score": 1, "symbols": {}}',
    b'{"action": "reject", "score": "high", "symbols": {}}',
    b'{"action": "reject", "score": 1, "symbols": []}',
])
def test_garbage_is_unreadable(body):
    with pytest.raises(Unreadable):
        parse_answer(body)


def test_rspamd_gets_the_real_client_and_postfixs_ipv6_prefix_is_dropped():
    envelope = Envelope("a@example.test", ["b@example.com", "c@example.com"],
                        xforward={"ADDR": "IPV6:2001:db8::25", "HELO": "mx.example.test",
                                  "NAME": "mx.example.test"})
    headers = RspamdClient("http://127.0.0.1:1", 5, mta_name="mx1.example.com").headers(
        envelope, Message(spool=None, size=5, md5="", message_id=None), "id")
    assert headers == [(name, value.encode()) for name, value in [
        ("Content-Length", "5"), ("From", "a@example.test"), ("IP", "2001:db8::25"),
        ("Helo", "mx.example.test"), ("Hostname", "mx.example.test"), ("Queue-Id", "id"),
        ("MTA-Name", "mx1.example.com"), ("Rcpt", "b@example.com"), ("Rcpt", "c@example.com")]]


def test_unavailable_never_refuses_and_says_so_in_every_key():
    assert NO_VERDICTS.matching(tuple(REFUSABLE)) == []
    assert set(NO_VERDICTS.metadata().values()) == {"unavailable"}
    spam = Verdicts(action="reject", score="15.00", spf="pass", dkim="none", dmarc="fail",
                    dmarc_policy="reject")
    assert spam.matching(("spam-reject", "dmarc-reject", "spf-fail")) == [
        "spam-reject", "dmarc-reject"]


# -- a real rspamd and DNS -----------------------------------------------------------

@pytest.fixture(scope="module")
def dkim_private_key(tmp_path_factory):
    private, public = dkim_key(tmp_path_factory.mktemp("dkim"))
    return private, public


@pytest.fixture(scope="module")
def dns(dkim_private_key, tmp_path_factory):
    server = DnsServer(tmp_path_factory.mktemp("dns"), dkim_private_key[1]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clamd(tmp_path_factory):
    server = ClamdServer(tmp_path_factory.mktemp("clamd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rspamd(dns, clamd):
    server = RspamdServer(dns.port, clamd_port=clamd.port).start()
    yield server
    server.close()


def write_verdicts_ini(path, swift):
    """A tag-only catch-all, a destination that refuses spam and DMARC p=reject failures."""
    path = pathlib.Path(path)
    path.write_text(
        f"[DEFAULT]\nrecipient = DEFAULT\ncontainer = {TAGGED}\nauth_version = 1\n"
        f"authurl = {swift.auth_url}\nuser = test:tester\nkey = testing\n"
        "create_container = true\n\n"
        f"[REFUSING]\nrecipient = strict@example.com\ncontainer = {REFUSING}\n"
        "reject_verdicts = spam-reject, dmarc-reject, virus\n\n"
        f"[QUEUE]\nrecipient = queue@example.com\ncontainer = {QUEUED}\n")
    path.chmod(0o640)
    create_containers(path)
    return path


@pytest.fixture(scope="module")
def verdicts_ini(swift, tmp_path_factory):
    return write_verdicts_ini(tmp_path_factory.mktemp("verdicts") / "swiftdrop.ini", swift)


@pytest.fixture(scope="module")
def filter_with_rspamd(rspamd, verdicts_ini, tmp_path_factory):
    with FilterProcess(verdicts_ini, tmp_path_factory.mktemp("filter"),
                       "--rspamd-url", rspamd.url, "--antivirus", "--log-target", "stderr",
                       *FULL_REPLY) as process:
        yield process


def message(sender_domain=DOMAIN, body=b"Hello, this is a perfectly normal message.\r\n",
            subject="verdicts"):
    stamp = time.time_ns()
    return (f"From: Alice <alice@{sender_domain}>\r\nTo: Bob <bob@example.com>\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{stamp}@{sender_domain}>\r\n"
            "Date: Mon, 30 Nov 2026 22:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode() + body


def send(address, body, *, client=CLIENT, sender=f"alice@{DOMAIN}",
         recipients=("bob@example.com",), helo=f"mail.{DOMAIN}"):
    """Speak as Postfix's proxy client: XFORWARD names the real client. The final reply."""
    with RawSmtp(address) as smtp:
        assert smtp.command("EHLO postfix.example.com")[0] == 250
        assert smtp.command(f"XFORWARD NAME={helo} ADDR={client} PROTO=ESMTP "
                            f"HELO={helo}")[0] == 250
        return transaction(smtp, body, f"<{sender}>", recipients)


def stored(swift, reply):
    """Metadata (x-object-meta-* without the prefix) and bytes of every copy named."""
    code, text = reply
    assert code == 250, reply
    copies = []
    for location in text.removeprefix("2.0.0 Ok: stored as ").split(", "):
        container, name = location.split("/", 1)
        headers, body = swift.connection("test").get_object(container, name)
        copies.append(({key[len("x-object-meta-"):]: value for key, value in headers.items()
                        if key.startswith("x-object-meta-")}, body))
    return copies


def verdicts_of(swift, reply):
    [(metadata, _)] = stored(swift, reply)
    return metadata


@pytest.mark.slow
def test_spf_pass_dkim_pass_dmarc_pass(swift, filter_with_rspamd, dkim_private_key):
    body = sign(message(), dkim_private_key[0])
    reply = send(filter_with_rspamd.address, body)
    [(metadata, stored_body)] = stored(swift, reply)
    assert stored_body == body  # no header added
    assert (metadata["spf"], metadata["dkim"], metadata["dmarc"]) == ("pass", "pass", "pass")
    assert metadata["dmarc-policy"] == "reject"
    assert metadata["spam-action"] == "no action"
    float(metadata["spam-score"])
    assert "R_SPF_ALLOW" in metadata["verdict-symbols"]
    assert "R_DKIM_ALLOW" in metadata["verdict-symbols"]


@pytest.mark.slow
def test_spf_softfail_and_no_signature_fail_dmarc(swift, filter_with_rspamd):
    metadata = verdicts_of(swift, send(filter_with_rspamd.address, message(),
                                       client=SOFTFAIL_CLIENT))
    assert (metadata["spf"], metadata["dkim"]) == ("softfail", "none")
    assert (metadata["dmarc"], metadata["dmarc-policy"]) == ("fail", "reject")
    assert "DMARC_POLICY_REJECT" in metadata["verdict-symbols"]


@pytest.mark.slow
def test_spf_fail(swift, filter_with_rspamd):
    metadata = verdicts_of(swift, send(filter_with_rspamd.address, message(STRICT),
                                       client=SOFTFAIL_CLIENT, sender=f"alice@{STRICT}",
                                       helo=f"mail.{STRICT}"))
    assert metadata["spf"] == "fail"
    assert "R_SPF_FAIL" in metadata["verdict-symbols"]


@pytest.mark.slow
def test_dkim_fail_when_the_body_changed_after_signing_yet_spf_keeps_dmarc_passing(
        swift, filter_with_rspamd, dkim_private_key):
    signed = sign(message(), dkim_private_key[0])
    altered = signed.replace(b"perfectly normal", b"slightly altered")
    metadata = verdicts_of(swift, send(filter_with_rspamd.address, altered))
    assert (metadata["spf"], metadata["dkim"], metadata["dmarc"]) == ("pass", "fail", "pass")


@pytest.mark.slow
def test_dkim_alone_passes_dmarc_from_a_client_spf_does_not_allow(
        swift, filter_with_rspamd, dkim_private_key):
    body = sign(message(), dkim_private_key[0])
    metadata = verdicts_of(swift, send(filter_with_rspamd.address, body,
                                       client=SOFTFAIL_CLIENT))
    assert (metadata["spf"], metadata["dkim"], metadata["dmarc"]) == ("softfail", "pass",
                                                                      "pass")


def forwarded_through_a_list(private_key):
    """example.test's signed mail as a list hands it on: a footer added, then sealed.

    The footer breaks the author's DKIM signature; the list vouches, in its
    seal, for the SPF, DKIM and DMARC pass it saw on arrival.
    """
    signed = sign(message(), private_key)
    with_footer = signed + b"--\r\nYou are subscribed to a list.\r\n"
    return arc_seal(with_footer, private_key,
                    f"spf=pass smtp.mailfrom={DOMAIN}; dkim=pass header.d={DOMAIN}; "
                    f"dmarc=pass header.from={DOMAIN}")


@pytest.mark.slow
def test_a_forwarded_message_fails_spf_and_dmarc_yet_its_arc_chain_passes(
        swift, filter_with_rspamd, dkim_private_key):
    body = forwarded_through_a_list(dkim_private_key[0])
    reply = send(filter_with_rspamd.address, body, client=SOFTFAIL_CLIENT,
                 helo=f"mail.{FORWARDER}")
    [(metadata, stored_body)] = stored(swift, reply)
    assert stored_body == body
    assert (metadata["spf"], metadata["dkim"], metadata["dmarc"]) == ("softfail", "fail",
                                                                      "fail")
    assert metadata["arc"] == "pass"
    assert "ARC_ALLOW" in metadata["verdict-symbols"]


@pytest.mark.slow
def test_an_arc_seal_over_a_message_changed_after_sealing_fails(
        swift, filter_with_rspamd, dkim_private_key):
    altered = forwarded_through_a_list(dkim_private_key[0]).replace(b"subscribed",
                                                                    b"unsubscribed")
    metadata = verdicts_of(swift, send(filter_with_rspamd.address, altered,
                                       client=SOFTFAIL_CLIENT, helo=f"mail.{FORWARDER}"))
    assert metadata["arc"] == "fail"
    assert "ARC_REJECT" in metadata["verdict-symbols"]


@pytest.mark.slow
def test_mail_that_no_forwarder_sealed_has_no_arc_verdict(swift, filter_with_rspamd,
                                                          dkim_private_key):
    metadata = verdicts_of(swift, send(filter_with_rspamd.address,
                                       sign(message(), dkim_private_key[0])))
    assert metadata["arc"] == "none"


def with_attachment(payload, filename="invoice.pdf.exe"):
    """A signed-looking message with `payload` as a base64 attachment."""
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return message(body=b"--part\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
                   b"--part\r\nContent-Type: application/octet-stream\r\n"
                   b"Content-Transfer-Encoding: base64\r\n"
                   b'Content-Disposition: attachment; filename="' + filename.encode()
                   + b'"\r\n\r\n' + encoded + b"--part--\r\n").replace(
        b"Content-Type: text/plain; charset=us-ascii",
        b'Content-Type: multipart/mixed; boundary="part"', 1)


@pytest.mark.slow
def test_an_infected_attachment_is_stored_with_its_virus_name(swift, filter_with_rspamd):
    body = with_attachment(b"junk before " + SAMPLE + b" junk after")
    reply = send(filter_with_rspamd.address, body)
    [(metadata, stored_body)] = stored(swift, reply)
    assert stored_body == body  # tag only: the bytes as sent
    assert (metadata["virus"], metadata["virus-name"]) == ("infected", SIGNATURE_NAME)
    assert "CLAM_VIRUS" in metadata["verdict-symbols"]
    assert metadata["spf"] == "pass"  # the other verdicts are there too


@pytest.mark.slow
def test_a_clean_message_is_clean_and_names_no_virus(swift, filter_with_rspamd):
    metadata = verdicts_of(swift, send(filter_with_rspamd.address,
                                       with_attachment(b"an ordinary attachment")))
    assert metadata["virus"] == "clean"
    assert "virus-name" not in metadata


@pytest.mark.slow
def test_a_virus_is_refused_where_the_destination_opted_in(swift, filter_with_rspamd):
    connection = swift.connection()

    def held():
        return [len(connection.get_container(name)[1]) for name in (TAGGED, REFUSING)]

    before = held()
    code, text = send(filter_with_rspamd.address, with_attachment(SAMPLE),
                      recipients=("bob@example.com", "strict@example.com"))
    assert code == 550 and text.startswith("5.7.1"), text
    assert held() == before  # one reply for the message: stored for nobody


@pytest.mark.slow
def test_clamd_down_means_stored_with_the_virus_verdict_unavailable_and_the_rest_intact(
        swift, clamd, filter_with_rspamd, dkim_private_key):
    clamd.stop()
    try:
        body = sign(with_attachment(SAMPLE), dkim_private_key[0])
        metadata = verdicts_of(swift, send(filter_with_rspamd.address, body))
    finally:
        clamd.start()
    assert metadata["virus"] == "unavailable"
    assert "virus-name" not in metadata
    assert (metadata["spf"], metadata["dkim"], metadata["dmarc"]) == ("pass", "pass", "pass")


@pytest.mark.slow
def test_gtube_is_stored_with_tag_only(swift, filter_with_rspamd):
    metadata = verdicts_of(swift, send(filter_with_rspamd.address,
                                       message(body=GTUBE + b"\r\n")))
    assert metadata["spam-action"] == "reject"
    assert "GTUBE" in metadata["verdict-symbols"]


def object_count(swift, container):
    return int(swift.connection("test").head_container(container)["x-container-object-count"])


@pytest.mark.slow
def test_gtube_is_refused_where_the_destination_opted_in_even_in_a_mixed_message(
        swift, filter_with_rspamd):
    before = object_count(swift, TAGGED), object_count(swift, REFUSING)
    code, text = send(filter_with_rspamd.address, message(body=GTUBE + b"\r\n"),
                      recipients=("strict@example.com",))
    assert (code, text.split()[0]) == (550, "5.7.1")
    # One reply for all: a refusing destination refuses the copy of the tag-only one too.
    code, _ = send(filter_with_rspamd.address, message(body=GTUBE + b"\r\n"),
                   recipients=("strict@example.com", "bob@example.com"))
    assert code == 550
    assert (object_count(swift, TAGGED), object_count(swift, REFUSING)) == before
    assert "refused" in filter_with_rspamd.log()


@pytest.mark.slow
def test_dmarc_reject_is_refused_where_opted_in_and_a_pass_is_stored(
        swift, filter_with_rspamd, dkim_private_key):
    code, _ = send(filter_with_rspamd.address, message(), client=SOFTFAIL_CLIENT,
                   recipients=("strict@example.com",))
    assert code == 550
    metadata = verdicts_of(swift, send(filter_with_rspamd.address,
                                       sign(message(), dkim_private_key[0]),
                                       recipients=("strict@example.com",)))
    assert metadata["dmarc"] == "pass"


@pytest.mark.slow
def test_queue_claim_and_run_carry_the_verdicts(swift, filter_with_rspamd, verdicts_ini,
                                                tmp_path, dkim_private_key):
    for _ in range(2):
        send(filter_with_rspamd.address, sign(message(), dkim_private_key[0]),
             recipients=("queue@example.com",))
    claim = run_swiftdrop("queue", "--config", str(verdicts_ini), "--destination", "QUEUE",
                          "claim")
    assert claim.returncode == 0, claim.stderr
    metadata = json.loads(claim.stdout)["metadata"]
    assert (metadata["spf"], metadata["dkim"], metadata["dmarc"]) == ("pass", "pass", "pass")
    assert (metadata["arc"], metadata["virus"]) == ("none", "clean")
    seen = tmp_path / "environment"
    worker = run_swiftdrop(
        "queue", "--config", str(verdicts_ini), "--destination", "QUEUE", "run", "--once",
        "--poll", "0.1", "--", "sh", "-c",
        f'echo "$SWIFTDROP_SPF $SWIFTDROP_DKIM $SWIFTDROP_DMARC $SWIFTDROP_DMARC_POLICY '
        f'$SWIFTDROP_SPAM_ACTION $SWIFTDROP_ARC $SWIFTDROP_VIRUS" >> {seen}; cat > /dev/null')
    assert worker.returncode == 0, worker.stderr
    assert seen.read_text() == "pass pass pass reject no action none clean\n"


def assert_stored_unavailable(swift, reply):
    metadata = verdicts_of(swift, reply)
    for key in ("spam-action", "spam-score", "spf", "dkim", "dmarc", "dmarc-policy", "arc",
                "virus"):  # the filters here run with --antivirus: not scanned either
        assert metadata[key] == "unavailable", (key, metadata)


def test_rspamd_not_listening_means_stored_unavailable_and_one_notice(swift, verdicts_ini,
                                                                       tmp_path):
    nothing = reserve_port()  # reserved, so nothing else listens there either
    url = f"http://127.0.0.1:{nothing}"
    with Webhook() as hook, FilterProcess(
            verdicts_ini, tmp_path, "--rspamd-url", url, "--antivirus",
            "--alert-webhook", hook.url,
            "--log-target", "stderr", *FULL_REPLY) as process:
        # GTUBE to a refusing destination: without verdicts nothing is refused.
        for _ in range(2):
            assert_stored_unavailable(swift, send(process.address,
                                                  message(body=GTUBE + b"\r\n"),
                                                  recipients=("strict@example.com",)))
        assert "connection refused; verdicts of this message are unavailable" in process.log()
        [notice] = hook.wait_for(1)
        assert (notice["event"], notice["rspamd"], notice["reason"]) == (
            "swiftdrop.verdicts_unavailable", url, "connection refused")


class Stalling(http.server.BaseHTTPRequestHandler):
    """An rspamd that reads the request, then answers too late, or answers garbage."""

    behaviour: typing.ClassVar[str] = "slow"
    release = threading.Event()

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.behaviour == "slow":
            self.release.wait(60)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            self.wfile.write(b"<html>not rspamd</html>")
        except BrokenPipeError:
            pass  # the slow case: the filter gave up long ago

    def log_message(self, *args):
        pass


@pytest.fixture
def stalling_rspamd():
    Stalling.release.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", reserve_port()), Stalling)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    Stalling.release.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("behaviour", ["slow", "garbage"])
def test_rspamd_slow_or_garbage_means_stored_within_the_deadline_and_unavailable(
        swift, verdicts_ini, tmp_path, stalling_rspamd, behaviour):
    Stalling.behaviour = behaviour
    url = f"http://127.0.0.1:{stalling_rspamd.server_address[1]}"
    with FilterProcess(verdicts_ini, tmp_path, "--rspamd-url", url, "--antivirus",
                       "--rspamd-timeout", "1",
                       "--store-timeout", "20", "--log-target", "stderr",
                       *FULL_REPLY) as process:
        started = time.monotonic()
        reply = send(process.address, message())
        # The bound: the message is stored within its deadline.
        assert time.monotonic() - started < 20
        assert_stored_unavailable(swift, reply)
        expected = "no answer within 1.0 s" if behaviour == "slow" else "not JSON"
        assert expected in process.log()


@pytest.mark.slow
def test_rspamd_stopped_then_started_again(swift, rspamd, verdicts_ini, tmp_path,
                                           dkim_private_key):
    """The real rspamd stopped: stored, unavailable; started again: verdicts again."""
    with FilterProcess(verdicts_ini, tmp_path, "--rspamd-url", rspamd.url, "--antivirus",
                       "--log-target", "stderr", *FULL_REPLY) as process:
        rspamd.stop()
        assert_stored_unavailable(swift, send(process.address, message()))
        rspamd.start()
        metadata = verdicts_of(swift, send(process.address,
                                           sign(message(), dkim_private_key[0])))
        assert metadata["dkim"] == "pass"
        assert metadata["spf"] in VERDICT_VALUES


def test_reject_verdicts_typo_names_file_section_and_key(swift, tmp_path):
    ini = tmp_path / "swiftdrop.ini"
    ini.write_text(f"[DEFAULT]\ncontainer = c\nauthurl = {swift.auth_url}\nuser = u\n"
                   "key = k\n\n[X]\nrecipient = x@example.com\n"
                   "reject_verdicts = spam-reject, dmarc-rejct\n")
    result = run_swiftdrop("check", "--config-only", "--config", str(ini))
    assert result.returncode == 78
    assert f"{ini}: [X] reject_verdicts: 'dmarc-rejct' is not one of" in result.stderr


@pytest.mark.parametrize(("arguments", "words"), [
    ([], "[REFUSING] reject_verdicts lists virus, but without --antivirus no message is "
         "scanned and none would be refused"),
    (["--antivirus"], "--antivirus needs --rspamd-url: rspamd is what asks clamd")])
def test_serve_will_not_start_where_the_virus_verdict_would_be_a_pretence(
        verdicts_ini, arguments, words):
    result = run_swiftdrop("serve", "--config", str(verdicts_ini), "--listen",
                           f"127.0.0.1:{reserve_port()}", "--log-target", "stderr", *arguments)
    assert result.returncode == 78
    assert f"cannot start: {words}" in result.stderr


def test_serve_refuses_a_url_that_is_not_http(swift_ini):
    result = run_swiftdrop("serve", "--config", str(swift_ini),
                           "--rspamd-url", "127.0.0.1:11333")
    assert result.returncode == 64
    assert "is not an http://HOST:PORT URL" in result.stderr
