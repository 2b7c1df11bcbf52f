"""When the MX's own TLS certificate expires, as a metric: read at every scrape.

A certificate that expires quietly breaks every sender that validates
(MTA-STS, DANE, some providers' policies), whether ACME renews it or an
operator does by hand. ``serve --tls-certificate PATH`` (the role gives
Postfix's /etc/postfix/tls/cert.pem) exports the leaf's notAfter as
``swiftdrop_tls_certificate_expiry_timestamp_seconds``, read again at each
scrape, so a renewal shows without a restart; a file that cannot be read
or parsed is ``swiftdrop_tls_certificate_readable 0``. The rules alert on
both (roles/swiftdrop/files/swiftdrop.rules.yml).

python3-cryptography (Debian's, with its security updates) parses the
certificate: the ``ssl`` module decodes only CA certificates it loads.
"""

import datetime
import logging

from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)


def expiry_of(path):
    """The first certificate's notAfter in `path` (PEM), as seconds since the epoch."""
    from cryptography import x509  # noqa: PLC0415 - only a filter with --tls-certificate needs it

    with open(path, "rb") as handle:
        certificate = x509.load_pem_x509_certificate(handle.read())
    not_after = getattr(certificate, "not_valid_after_utc", None)  # cryptography >= 42
    if not_after is None:  # Debian 12's 38: naive, in UTC
        not_after = certificate.not_valid_after.replace(tzinfo=datetime.UTC)
    return not_after.timestamp()


class CertificateCollector:
    """The expiry of each certificate file, and whether it could be read, at each scrape."""

    def __init__(self, paths):
        self.paths = tuple(paths)
        self._complained = set()  # one warning per file until it is readable again

    def collect(self):
        expiry = GaugeMetricFamily(
            "swiftdrop_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the TLS certificate in the file, seconds since the epoch",
            labels=["path"])
        readable = GaugeMetricFamily(
            "swiftdrop_tls_certificate_readable",
            "1 if the certificate file could be read and parsed, else 0", labels=["path"])
        for path in self.paths:
            try:
                expiry.add_metric([path], expiry_of(path))
            # ImportError: python3-cryptography is not installed
            except (OSError, ValueError, ImportError) as error:
                readable.add_metric([path], 0)
                if path not in self._complained:
                    self._complained.add(path)
                    log.warning("cannot read the TLS certificate %s: %s", path, error)
                continue
            self._complained.discard(path)
            readable.add_metric([path], 1)
        yield expiry
        yield readable
