"""Benchmark: what each concurrent session costs in memory and disk, for sizing an MX.

    PYTHONPATH=. .venv/bin/python -m bench.session_cost [--sessions 25,50,100] [--parts ...]

Starts a real Swift behind tests/faults/faultproxy.py (which can hold
Swift's answers back), the filter with its own --spool-dir, a private
Postfix (speed_adjust, as the role configures it) and rspamd with the
role's own configuration files, then prints, each figure with the load
average it was taken under (``--parts`` picks some of them):

- the filter's RSS with N sessions at once, sent straight to it, in the
  three states a session can hold the most in: *receiving* (256 KiB - 1 of
  DATA read: the most the in-memory spool holds), *storing* (that message
  complete, its upload sent and Swift's answer held back: spool, body and
  request), *spooled* (2 MiB of DATA read: on disk), with the slope per
  session and the spool's disk use;
- Postfix's smtpd with N client sessions held in DATA (2 MiB each): the
  processes' RSS and PSS per process, and where the bytes are so far
  (with speed_adjust smtpd receives the whole message before it opens a
  connection to the filter); then, with Swift's answers held back, what
  smtpd and the filter hold on disk once those messages are complete;
- rspamd: the RSS and PSS of its processes after one message and after
  scanning DKIM-signed messages of 5 KB and of 1 MB (a base64 attachment,
  and plain text), and its CPU time per message of each.

A fresh filter is started for each state, so one state's heap does not
carry into the next. Figures, not assertions.
"""

import argparse
import base64
import concurrent.futures
import http.client
import os
import pathlib
import re
import tempfile
import time

import jinja2
import yaml

from bench import filter_throughput
from bench.filter_throughput import cpu_seconds, load_average, proc_status
from swiftdrop.reception import SPOOL_IN_MEMORY
from tests.faults.faultproxy import FaultProxy
from tests.support.filterproc import FilterProcess
from tests.support.postfix import postfix_instance
from tests.support.rawsmtp import RawSmtp
from tests.support.rspamd import CLIENT, DOMAIN, DnsServer, RspamdServer, dkim_key, sign
from tests.support.swiftserver import SwiftServer

CONTAINER = "bench-sessions"
RECIPIENT = "bench@example.com"
ROLE = pathlib.Path(__file__).resolve().parent.parent / "roles/swiftdrop"
ROLE_RSPAMD_TEMPLATES = ROLE / "templates/rspamd"
ROLE_VERDICTS_TASKS = ROLE / "tasks/verdicts.yml"
LINE = b"x" * 998 + b"\r\n"
MIB = 2**20
# Long enough for the slowest upload of the largest N to reach Swift before
# the first answer is let through; the per-attempt timeout waits it out, and
# the store timeout stays 5 s under Postfix's smtpd_proxy_timeout (100 s), as
# the role's validate.yml has it.
SWIFT_ANSWER_DELAY = 30
ATTEMPT_TIMEOUT = SWIFT_ANSWER_DELAY * 2
STORE_TIMEOUT = 95


def write_ini(path, proxy, swift):
    return filter_throughput.write_ini(path, swift, CONTAINER, auth_url=proxy.auth_url,
                                       timeout=ATTEMPT_TIMEOUT)


def body_bytes(size):
    """`size` bytes of message in 1,000-octet lines (nothing to dot-stuff), no final dot."""
    header = b"Subject: session cost\r\n\r\n"
    return (header + LINE * (size // len(LINE) + 1))[:size - 2] + b"\r\n"


def start_transaction(address, size):
    """A session that sent MAIL, RCPT, DATA and `size` bytes of the message, not the dot."""
    client = RawSmtp(address, timeout=300)
    client.command("EHLO bench.example.net")
    for command in ("MAIL FROM:<s@origin.test>", f"RCPT TO:<{RECIPIENT}>"):
        code, text = client.command(command)
        if code != 250:
            raise SystemExit(f"{command}: {code} {text}")
    client.command("DATA")
    client.send(body_bytes(size))
    return client


def connections_to(port):
    """[bytes not yet read] of each established loopback TCP connection to `port`."""
    queues = []
    for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":  # ESTABLISHED
            queues.append(int(fields[4].split(":")[1], 16))
    return queues


def wait_until_read(port, timeout=120):
    """Until the server on `port` has read everything its clients sent."""
    deadline = time.monotonic() + timeout
    while sum(connections_to(port)):
        if time.monotonic() > deadline:
            raise SystemExit(f"the server on port {port} stopped reading")
        time.sleep(0.2)
    time.sleep(0.5)  # the last chunk read is written to the spool


def spool_use(pid, spool_dir):
    """(open spool files, bytes they hold on disk) of process `pid`."""
    files, allocated = 0, 0
    for entry in pathlib.Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(entry).startswith(f"{spool_dir}/"):
                files += 1
                allocated += os.stat(entry).st_blocks * 512
        except FileNotFoundError:  # closed while we looked
            continue
    return files, allocated


def fresh_filter(ini, workdir, spool_dir):
    """A new filter spooling to `spool_dir` (kept as its .spool_dir), after one message."""
    proc = FilterProcess(ini, workdir, "--log-target", "stderr", "--spool-dir", str(spool_dir),
                         "--store-timeout", str(STORE_TIMEOUT)).start()
    proc.spool_dir = spool_dir.resolve()
    client = start_transaction(proc.address, 100)
    client.send(b".\r\n")
    if client.reply()[0] != 250:
        raise SystemExit(proc.log())
    client.socket.close()
    return proc


def receiving(proc, steps, size):
    """[(N, RSS, spool files, spool bytes)] as sessions with `size` bytes of DATA accumulate."""
    clients, rows = [], [(0, proc_status(proc.process.pid, "VmRSS"), 0, 0, load_average())]
    for count in steps:
        while len(clients) < count:
            clients.append(start_transaction(proc.address, size))
        wait_until_read(proc.port)
        rows.append((count, proc_status(proc.process.pid, "VmRSS"),
                     *spool_use(proc.process.pid, proc.spool_dir), load_average()))
    for client in clients:
        client.socket.close()
    return rows


def storing(proc, proxy, steps, size):
    """[(N, RSS)] with N complete messages whose uploads wait for Swift's answer."""
    rows = [(0, proc_status(proc.process.pid, "VmRSS"), 0, 0, load_average())]
    for count in steps:
        proxy.set_mode("delay", SWIFT_ANSWER_DELAY, methods=("PUT",))
        before = proxy.stats.snapshot()["injected"]
        clients = [start_transaction(proc.address, size) for _ in range(count)]
        for client in clients:
            client.send(b".\r\n")
        deadline = time.monotonic() + SWIFT_ANSWER_DELAY
        while proxy.stats.snapshot()["injected"] - before < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {proxy.stats.snapshot()['injected'] - before} of "
                                 f"{count} uploads reached Swift in time")
            time.sleep(0.1)
        rows.append((count, proc_status(proc.process.pid, "VmRSS"),
                     *spool_use(proc.process.pid, proc.spool_dir), load_average()))
        release_answers(proxy, clients, proc)
    return rows


def release_answers(proxy, clients, proc):
    """Let Swift's held answers through; every client must then get its 250."""
    proxy.set_mode("pass")
    for client in clients:
        code, text = client.reply()
        if code != 250:
            raise SystemExit(f"not stored: {code} {text}\n{problems(proc)}")
        client.socket.close()


def problems(proc):
    """The filter's warnings and errors, for a bench that did not get its 250s."""
    return "\n".join(line for line in proc.log().splitlines()
                     if "WARNING" in line or "ERROR" in line)


def print_filter_rows(label, rows):
    idle = rows[0][1]
    print(f"{label}:")
    print(f"{'sessions':>9} {'RSS MiB':>8} {'+ per session KiB':>18} {'spool files':>12} "
          f"{'spool MiB':>10} {'load':>5}")
    for count, rss, files, allocated, load in rows:
        slope = f"{(rss - idle) / count / 1024:.0f}" if count else "-"
        print(f"{count:>9} {rss / MIB:>8.1f} {slope:>18} {files:>12} {allocated / MIB:>10.1f} "
              f"{load:>5.1f}")


def filter_cost(ini, workdir, proxy, steps):
    small = SPOOL_IN_MEMORY - 1
    for label, size, measure in (
            (f"receiving, {small} bytes of DATA each (in memory)", small, receiving),
            (f"storing, {small}-byte messages, Swift's answer held back", small, storing),
            ("receiving, 2 MiB of DATA each (spooled to disk)", 2 * MIB, receiving)):
        spool_dir = workdir / f"spool-{measure.__name__}-{size}"
        spool_dir.mkdir()
        proc = fresh_filter(ini, workdir, spool_dir)
        try:
            rows = (measure(proc, proxy, steps, size) if measure is storing
                    else measure(proc, steps, size))
        finally:
            proc.stop()
        print_filter_rows(label, rows)


def instance_processes(postfix, name):
    """PIDs of the instance's `name` daemons (the master passes them MAIL_CONFIG)."""
    marker = f"MAIL_CONFIG={postfix.config_dir}".encode()
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and (entry / "comm").read_text().strip() == name
                    and marker in (entry / "environ").read_bytes().split(b"\0")):
                pids.append(int(entry.name))
        except OSError:  # exited while we looked
            continue
    return pids


def memory(pid):
    """(RSS, PSS) in bytes: PSS shares each shared page among the processes mapping it."""
    rollup = pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text()
    pss = int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1)) * 1024
    return proc_status(pid, "VmRSS"), pss


def held_in_queue(postfix, pids):
    """"DIR: N MiB" of the files the processes hold open, by directory of Postfix's queue."""
    found = {}
    for pid in pids:
        for entry in pathlib.Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = pathlib.Path(os.readlink(entry).removesuffix(" (deleted)"))
                if entry.is_file() and target.is_relative_to(postfix.queue_dir):
                    directory = str(target.parent.relative_to(postfix.queue_dir))
                    found[directory] = found.get(directory, 0) + os.stat(entry).st_blocks * 512
            except OSError:  # closed while we looked
                continue
    return ", ".join(f"{directory}: {size / MIB:.0f} MiB"
                     for directory, size in sorted(found.items()) if size) or "-"


def postfix_cost(proc, proxy, steps):
    # All sessions come from 127.0.0.1: anvil's per-client limit (50) would refuse some.
    with postfix_instance(proxy_filter=f"inet:127.0.0.1:{proc.port}",
                          relay_domains=["example.com"], recipients=[RECIPIENT],
                          extra_main={"smtpd_client_event_limit_exceptions": "127.0.0.0/8"}
                          ) as postfix:
        address = ("127.0.0.1", postfix.smtp_port)
        clients = []
        print("Postfix smtpd, sessions held in DATA with 2 MiB sent (speed_adjust):")
        print(f"{'sessions':>9} {'smtpd':>6} {'RSS MiB each':>13} {'PSS MiB each':>13} "
              f"{'filter conns':>13} {'smtpd holds, in queue':>22} {'load':>5}")
        for count in steps:
            while len(clients) < count:
                clients.append(start_transaction(address, 2 * MIB))
            wait_until_read(postfix.smtp_port)
            pids = instance_processes(postfix, "smtpd")
            usage = [memory(pid) for pid in pids]
            held = held_in_queue(postfix, pids)
            filter_connections = len(connections_to(proc.port))
            print(f"{count:>9} {len(pids):>6} "
                  f"{sum(r for r, _ in usage) / len(usage) / MIB:>13.1f} "
                  f"{sum(p for _, p in usage) / len(usage) / MIB:>13.2f} "
                  f"{filter_connections:>13} {held:>22} {load_average():>5.1f}")
        # Now let every message end, and hold Swift's answers back: Postfix hands them to
        # the filter, which spools and uploads them while smtpd still holds its copy.
        proxy.set_mode("delay", SWIFT_ANSWER_DELAY, methods=("PUT",))
        before = proxy.stats.snapshot()["injected"]
        for client in clients:
            client.send(b".\r\n")
        deadline = time.monotonic() + SWIFT_ANSWER_DELAY
        while proxy.stats.snapshot()["injected"] - before < len(clients):
            if time.monotonic() > deadline:
                raise SystemExit("the uploads did not all reach Swift in time")
            time.sleep(0.1)
        pids = instance_processes(postfix, "smtpd")
        _, spooled = spool_use(proc.process.pid, proc.spool_dir)
        print(f"{len(clients)} messages of 2 MiB complete, handed to the filter, Swift's answers "
              f"held back: smtpd holds {held_in_queue(postfix, pids)} in Postfix's queue, "
              f"the filter's spool {spooled / MIB:.0f} MiB, "
              f"{len(connections_to(proc.port))} filter connections, filter RSS "
              f"{proc_status(proc.process.pid, 'VmRSS') / MIB:.1f} MiB "
              f"(load {load_average():.1f})")
        release_answers(proxy, clients, proc)


def role_rspamd(dns_port):
    """rspamd as the role configures it: the role's local.d and override.d files
    (its worker count, modules and all), with DNS from the bench's dnsmasq."""
    server = RspamdServer(dns_port)
    for directory in ("local.d", "override.d"):
        for stale in (server.confdir / directory).iterdir():
            stale.unlink()
    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE_RSPAMD_TEMPLATES),
                                   keep_trailing_newline=True)
    templates.filters["comment"] = lambda text: f"# {text}"
    templates.filters["bool"] = bool
    settings = {"ansible_managed": "rendered by bench.session_cost",
                "swiftdrop_rspamd_port": server.port,
                "swiftdrop_rspamd_third_party_checks": False}
    for item in role_rspamd_files():
        text = templates.get_template(f"{item['name']}.j2").render(settings)
        (server.confdir / item["dir"] / item["name"]).write_text(text)
    (server.confdir / "local.d" / "options.inc").write_text(
        f'dns {{ nameserver = ["127.0.0.1:{dns_port}"]; timeout = 1s; retransmits = 1; }}\n')
    (server.confdir / "local.d" / "logging.inc").write_text('type = "console";\nlevel = "error";\n')
    return server


def role_rspamd_files():
    """[{dir, name}] of the files the role's verdicts.yml installs, from its own loop."""
    tasks = yaml.safe_load(ROLE_VERDICTS_TASKS.read_text())
    return next(task["loop"] for task in tasks if "ansible.builtin.template" in task)


def rspamd_processes(rspamd):
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == rspamd.process.pid:  # the process group
                pids.append(int(entry.name))
    return pids


def scan(rspamd, message):
    connection = http.client.HTTPConnection("127.0.0.1", rspamd.port, timeout=30)
    connection.request("POST", "/checkv2", body=message, headers={
        "IP": CLIENT, "Helo": f"mail.{DOMAIN}", "From": f"alice@{DOMAIN}",
        "Rcpt": RECIPIENT, "Queue-Id": "bench"})
    response = connection.getresponse()
    response.read()
    connection.close()
    if response.status != 200:
        raise SystemExit(f"rspamd answered {response.status}")


def signed_message(private_key, size, attachment=False):
    """A DKIM-signed message of about `size` bytes: plain text, or a short text part
    and a base64 attachment of random bytes (what large mail mostly is)."""
    line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"
    header = (f"From: Alice <alice@{DOMAIN}>\r\nTo: <{RECIPIENT}>\r\nSubject: bench\r\n"
              f"Message-ID: <bench-{size}-{attachment}@{DOMAIN}>\r\n"
              "Date: Mon, 30 Nov 2026 22:00:00 +0000\r\nMIME-Version: 1.0\r\n").encode()
    if not attachment:
        header += b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        return sign(header + line * ((size - len(header)) // len(line)), private_key)
    encoded = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
    body = (b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + line * 20
            + b'--b\r\nContent-Type: application/pdf; name="report.pdf"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--b--\r\n")
    return sign(header + body, private_key)


def rspamd_cost(workdir, messages, sessions):
    private_key, public_key = dkim_key(workdir)
    dns = DnsServer(workdir, public_key).start()
    rspamd = role_rspamd(dns.port)
    started = time.monotonic()
    rspamd.start()

    def report(label):
        pids = rspamd_processes(rspamd)
        usage = [memory(pid) for pid in pids]
        # rspamd titles its processes "rspamd: normal process (...)" and so on.
        kinds = sorted(pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode()
                       .removeprefix("rspamd: ").split(" process")[0] for pid in pids)
        print(f"rspamd {label}: {len(usage)} processes ({', '.join(kinds)}), RSS "
              f"{sum(r for r, _ in usage) / MIB:.1f} MiB, PSS {sum(p for _, p in usage) / MIB:.1f}"
              f" MiB (load {load_average():.1f})")

    try:
        print(f"rspamd (the role's configuration) answered after "
              f"{time.monotonic() - started:.0f} s")
        scan(rspamd, signed_message(private_key, 5 * 1024))
        report("after one message")
        for label, size, attachment, count in (
                ("5 KB", 5 * 1024, False, messages),
                ("1 MB (a base64 attachment)", MIB, True, max(1, messages // 5)),
                ("1 MB (plain text)", MIB, False, max(1, messages // 10))):
            message = signed_message(private_key, size, attachment)
            cpu_before = sum(cpu_seconds(pid) for pid in rspamd_processes(rspamd))
            scanned_at = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
                list(pool.map(lambda _, message=message: scan(rspamd, message), range(count)))
            elapsed = time.monotonic() - scanned_at
            cpu = sum(cpu_seconds(pid) for pid in rspamd_processes(rspamd)) - cpu_before
            print(f"rspamd CPU per {label} message: {cpu * 1000 / count:.2f} ms "
                  f"({count} messages, {count / elapsed:.1f} msg/s with {sessions} at once)")
            report(f"after the {label} messages")
    finally:
        rspamd.close()
        dns.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="25,50,100",
                        help="numbers of concurrent sessions, comma-separated, ascending")
    parser.add_argument("--rspamd-messages", type=int, default=500)
    parser.add_argument("--parts", default="filter,postfix,rspamd",
                        help="what to measure, comma-separated")
    options = parser.parse_args()
    parts = options.parts.split(",")
    steps = [int(step) for step in options.sessions.split(",")]

    with tempfile.TemporaryDirectory(prefix="swiftdrop-bench-", dir="/var/tmp") as scratch:
        workdir = pathlib.Path(scratch)
        print(f"load average before: {pathlib.Path('/proc/loadavg').read_text().strip()}")
        with SwiftServer(workdir / "swift") as swift, FaultProxy(swift.port) as proxy:
            ini = write_ini(workdir / "swiftdrop.ini", proxy, swift)
            if "filter" in parts:
                filter_cost(ini, workdir, proxy, steps)
            if "postfix" in parts:
                spool_dir = workdir / "spool-postfix"
                spool_dir.mkdir()
                proc = fresh_filter(ini, workdir, spool_dir)
                try:
                    postfix_cost(proc, proxy, steps)
                finally:
                    proc.stop()
        if "rspamd" in parts:
            rspamd_cost(workdir, options.rspamd_messages, 4)
        print(f"load average after: {pathlib.Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
