"""A TLS terminator from Debian (stunnel4) in front of a plain-HTTP server, for tests.

Production Swift usually sits behind a TLS terminator, so that is what the
tests build: :class:`TestCA` makes a throwaway CA and server certificates
with the ``openssl`` CLI, :class:`TLSFront` runs ``stunnel4`` on a free
loopback port with one of those certificates and forwards the decrypted bytes
to the backend. The client sees a real TLS handshake by a real server; what it
trusts is up to the client, which is what the tests are about.

The Swift behind it must hand out https storage URLs although it speaks
http itself: ``SwiftServer(..., storage_url_scheme="https")``.
"""

import pathlib
import secrets
import shutil
import subprocess

from tests.support.filterproc import wait_for_port
from tests.support.ports import reserve_port

HOST = "127.0.0.1"
STUNNEL = shutil.which("stunnel4") or "/usr/bin/stunnel4"
VALIDITY_DAYS = "2"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class TestCA:
    """A CA that exists only for one test session, and the certificates it issues."""

    __test__ = False  # a helper, not a pytest test class

    def __init__(self, directory, name="SwiftDrop test CA"):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cert = self.directory / "ca.pem"
        self.key = self.directory / "ca.key"
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", self.key, "-out", self.cert, "-days", VALIDITY_DAYS,
                "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=self.directory)

    def issue(self, name, *alt_names):
        """A server certificate for `alt_names` ("IP:127.0.0.1", "DNS:localhost"...).

        Returns (certificate path, key path).
        """
        cert, key, request = (self.directory / f"{name}.{ext}" for ext in ("pem", "key", "csr"))
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(
            f"subjectAltName = {', '.join(alt_names)}\n"
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid\n")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", key, "-out", request, "-subj", f"/CN={name}",
                cwd=self.directory)
        openssl("x509", "-req", "-in", request, "-CA", self.cert, "-CAkey", self.key,
                "-set_serial", str(secrets.randbits(63)), "-days", VALIDITY_DAYS,
                "-extfile", extensions, "-out", cert, cwd=self.directory)
        return cert, key


class TLSFront:
    """``stunnel4`` terminating TLS on 127.0.0.1:`port` for 127.0.0.1:`backend_port`."""

    def __init__(self, workdir, backend_port, cert, key, port=None):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.backend_port, self.cert, self.key = backend_port, cert, key
        self.port = port or reserve_port()
        self.config_path = self.workdir / f"stunnel-{self.port}.conf"
        self.log_path = self.workdir / f"stunnel-{self.port}.log"
        self.process = None

    @property
    def url(self):
        return f"https://{HOST}:{self.port}"

    def config(self):
        """stunnel's config: foreground, no pid file, one service."""
        return (f"foreground = yes\npid =\noutput = {self.log_path}\n"
                f"[swift]\naccept = {HOST}:{self.port}\nconnect = {HOST}:{self.backend_port}\n"
                f"cert = {self.cert}\nkey = {self.key}\n")

    def start(self):
        self.config_path.write_text(self.config())
        self.process = subprocess.Popen([STUNNEL, str(self.config_path)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, process=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
