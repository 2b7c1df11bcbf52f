"""A real rspamd and a real DNS server (dnsmasq) on loopback for the verdict tests.

dnsmasq answers for the test domains only (``--local=/#/``: every other name
is NXDOMAIN, nothing is forwarded), so rspamd's SPF, DKIM, DMARC and RBL
lookups never leave the machine. rspamd runs as an unprivileged process
(``nobody``) from Debian's own /etc/rspamd/rspamd.conf with our LOCAL_CONFDIR,
RUNDIR and DBDIR: one normal worker on a reserved loopback port, no
controller, no proxy, no Redis, no fuzzy storage, DNS from the dnsmasq above.
"""

import base64
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import dkim

from tests.support.filterproc import wait_for_port
from tests.support.ports import reserve_port

DOMAIN = "example.test"
# The client our "Postfix" names in XFORWARD: TEST-NET-1, never contacted
# (it is only the IP header rspamd checks SPF against). rspamd skips the
# checks for loopback clients, so the client must not be 127.0.0.1.
CLIENT = "192.0.2.10"
SELECTOR = "test"
# A mailing list that forwards example.test's mail and seals it with ARC; its
# key is the same test key, under its own name.
FORWARDER = f"lists.{DOMAIN}"
# How long rspamd may take to start: it compiles its Hyperscan regexps first.
STARTUP_TIMEOUT = 300
# Modules that would query the Internet (through our DNS, where they fail)
# or need Redis; off, so the answers hold only what the tests look at.
DISABLED_MODULES = ("fuzzy_check", "rbl", "surbl", "phishing", "asn", "neural",
                    "ratelimit", "greylist", "replies", "url_reputation", "reputation",
                    "history_redis", "dcc", "spamassassin", "mx_check", "emails",
                    "whitelist", "maillist")


# As roles/swiftdrop/templates/rspamd/antivirus.conf.j2 writes it, with the
# test's clamd and a short wait: clamd away must not cost the other verdicts.
ANTIVIRUS_CONF = """\
clamav {{
  type = "clamav";
  servers = "{servers}";
  symbol = "CLAM_VIRUS";
  scan_mime_parts = false;
  timeout = 2.0;
  retransmits = 1;
}}
"""


def dkim_key(workdir):
    """An RSA key pair: (private key PEM, the p= value of its DNS record)."""
    private = pathlib.Path(workdir) / "dkim.key"
    subprocess.run(["openssl", "genrsa", "-out", str(private), "1024"], check=True,
                   capture_output=True)
    public_der = subprocess.run(["openssl", "rsa", "-in", str(private), "-pubout",
                                 "-outform", "DER"], check=True, capture_output=True).stdout
    return private.read_bytes(), base64.b64encode(public_der).decode()


def sign(message, private_key, domain=DOMAIN):
    """`message` with a DKIM-Signature by `domain` (python3-dkim, relaxed/relaxed)."""
    signature = dkim.sign(message, SELECTOR.encode(), domain.encode(), private_key,
                          canonicalize=(b"relaxed", b"relaxed"),
                          include_headers=[b"from", b"to", b"subject", b"message-id",
                                           b"date"])
    return signature + message


def arc_seal(message, private_key, results, domain=FORWARDER):
    """`message` sealed by `domain` (python3-dkim's arc_sign), as a forwarder that saw `results`.

    The forwarder writes what it verified on arrival as its own
    Authentication-Results, then seals: ARC-Authentication-Results,
    ARC-Message-Signature and ARC-Seal, the first hop's (i=1).
    """
    received = f"Authentication-Results: {domain}; {results}\r\n".encode() + message
    seal = dkim.arc_sign(received, SELECTOR.encode(), domain.encode(), private_key,
                         domain.encode())
    return b"".join(seal) + received


class DnsServer:
    """dnsmasq on a reserved loopback port with the test domains' records."""

    def __init__(self, workdir, dkim_public_key):
        self.port = reserve_port()
        self.workdir = pathlib.Path(workdir)
        records = {
            DOMAIN: f"v=spf1 ip4:{CLIENT} ~all",
            f"_dmarc.{DOMAIN}": "v=DMARC1; p=reject",
            f"{SELECTOR}._domainkey.{DOMAIN}": f"v=DKIM1; k=rsa; p={dkim_public_key}",
            f"{SELECTOR}._domainkey.{FORWARDER}": f"v=DKIM1; k=rsa; p={dkim_public_key}",
            # a second domain whose SPF fails hard, for "fail" rather than "softfail"
            f"strict.{DOMAIN}": f"v=spf1 ip4:{CLIENT} -all",
        }
        self.command = [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--local=/#/", "--bind-interfaces", "--listen-address=127.0.0.1",
            f"--port={self.port}", "--user=nobody", "--log-facility=-",
            f"--host-record=mail.{DOMAIN},{CLIENT}", f"--mx-host={DOMAIN},mail.{DOMAIN}",
            f"--host-record=mail.strict.{DOMAIN},{CLIENT}",
            f"--mx-host=strict.{DOMAIN},mail.strict.{DOMAIN}",
        ] + [f"--txt-record={name},{value}" for name, value in records.items()]
        self.process = None

    def start(self):
        log = open(self.workdir / "dnsmasq.log", "ab")
        self.process = subprocess.Popen(self.command, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 15
        while not self.answers():
            assert self.process.poll() is None, (self.workdir / "dnsmasq.log").read_text()
            assert time.monotonic() < deadline, "dnsmasq did not answer"
            time.sleep(0.05)
        return self

    def answers(self):
        """True once a query gets an answer (dnsmasq answers any, even for no name)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(0.5)
            query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01"
            try:
                probe.sendto(query, ("127.0.0.1", self.port))
                return probe.recv(512)[:2] == b"\x12\x34"
            except OSError:
                return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class RspamdServer:
    """rspamd with one normal worker on 127.0.0.1:port; stop() and start() again freely."""

    def __init__(self, dns_port, clamd_port=None):
        self.port = reserve_port()
        # Under /tmp and readable: rspamd's workers run as nobody.
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="swiftdrop-rspamd-"))
        self.root.chmod(0o755)
        self.confdir = self.root / "conf"
        for name in ("conf/local.d", "conf/override.d", "run", "db", "log"):
            (self.root / name).mkdir(parents=True)
        for name in ("run", "db", "log"):
            shutil.chown(self.root / name, "nobody", "nogroup")
        local = self.confdir / "local.d"
        (local / "options.inc").write_text(
            f'dns {{ nameserver = ["127.0.0.1:{dns_port}"]; timeout = 1s; retransmits = 1; }}\n')
        # As the role does: override.d replaces Debian's list (local.d would add to it).
        (self.confdir / "override.d" / "options.inc").write_text(
            'local_addrs = ["127.0.0.0/8", "::1"];\n')
        (local / "logging.inc").write_text('type = "console";\nlevel = "error";\n')
        (local / "worker-controller.inc").write_text("enabled = false;\n")
        (local / "worker-proxy.inc").write_text("enabled = false;\n")
        (local / "classifier-bayes.conf").write_text("enabled = false;\n")
        for module in DISABLED_MODULES:
            (local / f"{module}.conf").write_text("enabled = false;\n")
        (self.confdir / "override.d" / "worker-normal.inc").write_text(
            f'bind_socket = "127.0.0.1:{self.port}";\ncount = 1;\n')
        if clamd_port is not None:  # the role's antivirus.conf, with the test's clamd
            (local / "antivirus.conf").write_text(ANTIVIRUS_CONF.format(
                servers=f"127.0.0.1:{clamd_port}"))
        self.log_path = self.root / "rspamd.log"
        self.process = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            ["rspamd", "--no-fork", "--user", "nobody", "--group", "nogroup",
             "--config", "/etc/rspamd/rspamd.conf",
             "--var", f"LOCAL_CONFDIR={self.confdir}", "--var", f"RUNDIR={self.root}/run",
             "--var", f"DBDIR={self.root}/db", "--var", f"LOGDIR={self.root}/log"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        try:
            wait_for_port(self.port, timeout=STARTUP_TIMEOUT, process=self.process)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error}: {self.log_path.read_text(errors='replace')}") from None
        return self

    def stop(self):
        """Stop the main process and its workers (their own process group)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def close(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
