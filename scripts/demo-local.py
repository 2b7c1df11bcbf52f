"""Show SwiftDrop's promise on this machine, everything on loopback.

Starts a real Swift, the filter and a private Postfix, sends one mail through
Postfix with swaks, and prints what Swift now holds and what the filter
logged. Run through scripts/demo, which installs what it needs first.
"""

import pathlib
import re
import subprocess
import sys
import tempfile

from tests.conftest import write_ini
from tests.support.filterproc import FilterProcess, run_swiftdrop
from tests.support.postfix import postfix_instance
from tests.support.swiftserver import SwiftServer


def main():
    with tempfile.TemporaryDirectory(prefix="swiftdrop-demo-") as scratch:
        workdir = pathlib.Path(scratch)
        with SwiftServer(workdir / "swift") as swift:
            ini = write_ini(workdir / "swiftdrop.ini", swift)
            print(f"== Swift on {swift.auth_url}; swiftdrop check:")
            print(run_swiftdrop("check", "--config", str(ini)).stdout, end="")
            with FilterProcess(ini, workdir, "--hostname", "mx.swiftdrop.test",
                               "--log-target", "stderr") as proxy, \
                    postfix_instance(proxy_filter=f"inet:127.0.0.1:{proxy.port}",
                                     relay_domains=["example.com"],
                                     recipients=["prod@example.com", "someone@example.com"]
                                     ) as postfix:
                print(f"== Postfix on 127.0.0.1:{postfix.smtp_port} -> filter on "
                      f"127.0.0.1:{proxy.port}; sending with swaks")
                result = subprocess.run(
                    ["swaks", "--server", f"127.0.0.1:{postfix.smtp_port}",
                     "--from", "demo@origin.test", "--to", "prod@example.com",
                     "--header", "Subject: SwiftDrop demo", "--body", "Stored, byte for byte."],
                    capture_output=True, text=True, check=True)
                reply = re.search(r"<-\s+(250 .*stored as (\S+?)/(\S+))", result.stdout)
                print(f"   Postfix answered: {reply.group(1)}")
                container, name = reply.group(2), reply.group(3)
                headers, body = swift.connection("test2").get_object(container, name)
                print(f"== Swift container {container!r} now holds {name}:")
                for key in sorted(k for k in headers if k.startswith("x-object-meta-")):
                    print(f"   {key}: {headers[key]}")
                print("   ---\n   " + body.decode().replace("\r\n", "\n   ").rstrip())
                print("== the filter's log line for it:")
                print("   " + next(line for line in proxy.log().splitlines() if name in line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
