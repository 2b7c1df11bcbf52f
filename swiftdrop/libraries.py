"""swiftclient and keystoneauth1, imported without what SwiftDrop never uses of them.

Debian's ``swiftclient.client`` tries to import keystoneclient at its top,
just in case auth v2/v3 is used; that drags in oslo.*, osprofiler and
eventlet: about 1,100 modules, 40 MB of RSS and half a second for every
process, a tempauth one included. Its ``swiftclient.version`` imports
pkg_resources (another 0.3 s) only to put the version into the User-Agent.
SwiftDrop authenticates with keystoneauth1 itself (:mod:`swiftdrop.auth`),
so swiftclient's optional keystoneclient import is refused here, and the
version comes from the package metadata.

keystoneauth1's session in turn try-imports osprofiler (which imports
oslo.concurrency and eventlet, 30 MB) to add tracing headers when a
profiler is active; SwiftDrop never activates one, so :func:`keystone`
refuses that optional import too. Both modules are imported only when a
section uses auth v2/v3.
"""

from contextlib import contextmanager
import importlib
import importlib.metadata
import sys
import types


@contextmanager
def _refused(*optional):
    """Make ``import`` of the `optional` modules fail while the block runs.

    The libraries guard these imports with try/except ImportError; a None
    in sys.modules is Python's documented way to make an import fail. A
    module that is already loaded stays as it is.
    """
    refused = [name for name in optional if name not in sys.modules]
    for name in refused:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in refused:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]


def _swiftclient():
    if "swiftclient.version" not in sys.modules:
        version = types.ModuleType("swiftclient.version")
        try:
            version.version_string = importlib.metadata.version("python-swiftclient")
        except importlib.metadata.PackageNotFoundError:  # only the User-Agent shows it
            version.version_string = "unknown"
        sys.modules["swiftclient.version"] = version
    with _refused("keystoneclient"):
        return importlib.import_module("swiftclient.client")


def keystone():
    """(keystoneauth1.session, keystoneauth1.identity), for auth v2/v3 only."""
    with _refused("osprofiler"):
        session = importlib.import_module("keystoneauth1.session")
        identity = importlib.import_module("keystoneauth1.identity")
    return session, identity


swift = _swiftclient()
ClientException = swift.ClientException
# Imported after swiftclient.client above, so its package's optional imports are refused.
generate_temp_url = importlib.import_module("swiftclient.utils").generate_temp_url
