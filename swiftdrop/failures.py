"""One error boundary: whatever a Swift or Keystone request raises becomes a StoreError.

swiftclient does not wrap what the libraries beneath it raise: requests'
exceptions, urllib3's (swiftclient streams, so a connection cut after the
response headers surfaces later, while the body is read), keystoneauth1's
(ConnectFailure, HttpError ...), ssl and socket errors. Each of those is a
failure of a service, not a bug of ours, and must end the same way: 451, an
err journal entry with a reason the operator can act on ("Keystone at
https://...: connection refused"), a retry where one can help, the notice.
Only what is *not* among :func:`service_errors` is left to surface as an
internal error.

keystoneauth1's exceptions join the boundary once keystoneauth1 is loaded
(a section with auth v2/v3 loads it): a library that was never imported
cannot have raised anything, and importing it just for the ``except``
would cost a tempauth process the import.
"""

import errno
import http
import http.client
import socket
import ssl
import sys
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from urllib3.util.ssl_match_hostname import CertificateError as HostnameMismatch

from .libraries import ClientException

# ssl and socket errors are OSErrors.
LIBRARY_ERRORS = (ClientException, requests.RequestException, urllib3.exceptions.HTTPError,
                  http.client.HTTPException, OSError)

TIMEOUTS = (TimeoutError, socket.timeout, urllib3.exceptions.TimeoutError, requests.Timeout)
CUT_WHILE_READING = (http.client.IncompleteRead, urllib3.exceptions.IncompleteRead)
CLOSED_BEFORE_ANSWER = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                        ConnectionAbortedError)
# swiftclient's own wording when Keystone refused our credentials.
REFUSED_CREDENTIALS = ("Unauthorized", "Endpoint for")


def service_errors():
    """What a Swift or Keystone request raises when the service, not our code, failed."""
    keystone_errors = _keystone_errors()
    if keystone_errors is None:
        return LIBRARY_ERRORS
    return (*LIBRARY_ERRORS, keystone_errors.ClientException)


def _keystone_errors():
    """keystoneauth1.exceptions if loaded, else None (then none of them was raised)."""
    return sys.modules.get("keystoneauth1.exceptions")


class StoreError(Exception):
    """A copy could not be stored; carries what the operator needs to look it up.

    `status` is Swift's HTTP status (it decides about retries and goes into
    SWIFTDROP_SWIFT_STATUS), never Keystone's: Keystone's answer is in the reason.
    """

    def __init__(self, reason, status=None, transaction_id=None, *, permanent=False):
        super().__init__(reason)
        self.reason, self.status, self.transaction_id = reason, status, transaction_id
        # A retry cannot help (an untrusted certificate, refused credentials).
        self.permanent = permanent


def store_error(error, *, server, timeout=None, doing=None, origin=None):
    """The StoreError for `error`, raised by a request to `server` ("Keystone at URL").

    `timeout` is the request's timeout, for "did not answer within N s";
    `origin` (scheme://host:port) names the server of a refused certificate
    when the error itself cannot (a plain socket's, unlike requests').
    """
    if isinstance(error, StoreError):
        return error
    prefix = f"{doing}: " if doing else ""
    certificate = untrusted_certificate(error)
    if certificate is not None:
        return StoreError(f"{prefix}TLS certificate of {origin or _origin(error)} not trusted: "
                          f"{certificate}", permanent=True)
    if isinstance(error, ClientException) and error.http_status is not None:
        answer = f"{error.http_status} {error.http_reason or ''}".strip()
        # Swift's own answers name no address: the section says which Swift.
        who = "Swift" if server.startswith("Swift at ") else server
        return StoreError(f"{prefix}{who} answered {answer}", error.http_status,
                          error.transaction_id)
    reason, permanent = _why(error, server, timeout)
    return StoreError(prefix + reason, permanent=permanent)


def _why(error, server, timeout):
    """(reason, permanent) for a failure below Swift's HTTP answer, or Keystone's."""
    causes = list(_causes(error))
    timeouts = TIMEOUTS
    keystone_errors = _keystone_errors()
    if keystone_errors is not None:
        timeouts = (*TIMEOUTS, keystone_errors.ConnectTimeout)
        for cause in causes:
            if isinstance(cause, keystone_errors.HttpError) and cause.http_status:
                return (f"{server} answered {_status_line(cause.http_status)}",
                        cause.http_status in (401, 403))
            if isinstance(cause, keystone_errors.EndpointNotFound | keystone_errors.Unauthorized):
                return f"{server}: {cause}", True
    if any(isinstance(cause, ConnectionRefusedError)
           or getattr(cause, "errno", None) == errno.ECONNREFUSED for cause in causes):
        return f"{server}: connection refused", False
    # urllib3's NewConnectionError (refused, unreachable) is a ConnectTimeoutError.
    if any(isinstance(cause, timeouts)
           and not isinstance(cause, urllib3.exceptions.NewConnectionError) for cause in causes):
        within = f" within {timeout:.3g} s" if timeout is not None else " in time"
        return f"{server} did not answer{within}", False
    if any(isinstance(cause, socket.gaierror) for cause in causes):
        return f"{server}: host name not found", False
    if any(isinstance(cause, CUT_WHILE_READING) or "Connection broken" in str(cause)
           for cause in causes):
        return f"{server} closed the connection after its response headers", False
    if any(isinstance(cause, CLOSED_BEFORE_ANSWER) for cause in causes):
        return f"{server} closed the connection before answering", False
    if isinstance(error, ClientException):  # swiftclient's words for a Keystone refusal
        return f"{server}: {error.msg}", error.msg.startswith(REFUSED_CREDENTIALS)
    return f"{server}: {type(error).__name__}: {error}", False


def _status_line(status):
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def describe_failure(error):
    """One line for the operator, whatever a Swift or Keystone request raised."""
    if isinstance(error, StoreError):
        return error.reason
    if isinstance(error, service_errors()):
        return store_error(error, server=_origin(error)).reason
    return str(error)


def untrusted_certificate(error):
    """Why the certificate was refused if `error` comes from verifying it, else None.

    OpenSSL checks the chain; urllib3 checks the host name itself for IP addresses.
    """
    for cause in _causes(error):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or cause.reason or str(cause)
        if isinstance(cause, HostnameMismatch):
            return str(cause)
    return None


def server_of(url):
    """scheme://host:port of `url`, for naming the server in a reason."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _origin(error):
    """scheme://host:port of the server the failed request went to."""
    for cause in _causes(error):
        request = getattr(cause, "request", None)
        if getattr(request, "url", None):
            return server_of(request.url)
        pool = getattr(cause, "pool", None)  # urllib3's MaxRetryError
        if pool is not None:
            return f"{pool.scheme}://{pool.host}:{pool.port}"
    return "the server"


def _causes(error):
    """`error` and everything it wraps: causes, contexts, exceptions among its args, .reason."""
    seen, pending = set(), [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None),
                  *current.args]
        pending.extend(item for item in linked if isinstance(item, BaseException))
