"""Benchmark: SwiftDrop end to end against raw Swift PUTs on the same Swift.

    PYTHONPATH=. .venv/bin/python -m bench.filter_throughput [--repeat N] [--no-keystone] [--tls]

Starts a real Swift, the filter and a private Postfix on loopback, then prints:
- msg/s of smtp-source -> Postfix -> filter -> Swift, for 5 KB and 1 MB
  messages with 1 and 8 sessions, next to the msg/s of a raw
  swiftclient put_object loop (same sizes, same concurrency, same Swift) and
  the ratio; each case `--repeat` times, alternating raw and filter, the
  medians printed with the load average seen during the case (the machine
  may be shared: wall-clock ratios move with the load);
- the filter's CPU time per MB and per message in each case, which does not
  depend on the load;
- the filter's idle RSS (after one message), its peak RSS with 20
  concurrent 1 MB sessions, and its peak above idle while it stores one
  50 MB message; the idle RSS with a Keystone v3 account too (starts a
  real Keystone; `--no-keystone` leaves it out);
- the start time of ``swiftdrop --help``, ``check --config-only`` and
  ``queue claim`` (median of 5);
- auth requests per 1,000 messages (target: one per account);
- with `--tls`, the filter's CPU per MB for 1 MB messages sent straight to
  it, over plain HTTP and over TLS to the same Swift behind stunnel.
Figures, not assertions: the tests check behaviour, this measures it.
"""

import argparse
import concurrent.futures
import hashlib
import os
import pathlib
import resource
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time

from swiftdrop.naming import MaildirNamer
from tests.support.filterproc import FilterProcess, run_swiftdrop
from tests.support.postfix import postfix_instance
from tests.support.swiftserver import SwiftServer

CONTAINER = "bench"
QUEUE_CONTAINER = "bench-queue"
RECIPIENT = "bench@example.com"


def write_ini(path, swift, container=CONTAINER, auth_url=None, **settings):
    """A checked ini for account test of `swift`, reached at `auth_url` (a proxy's) if given."""
    user, key = swift.accounts["test"]
    path.write_text(f"[DEFAULT]\nrecipient = DEFAULT\ncontainer = {container}\n"
                    f"authurl = {auth_url or swift.auth_url}\nuser = {user}\nkey = {key}\n"
                    "create_container = true\n"
                    + "".join(f"{name} = {value}\n" for name, value in settings.items()))
    path.chmod(0o600)
    result = run_swiftdrop("check", "--config", str(path))
    if result.returncode:
        raise SystemExit(result.stdout + result.stderr)
    return path


def object_count(swift):
    return int(swift.connection().head_container(CONTAINER)["x-container-object-count"])


def raw_put_rate(swift, size, sessions, messages, *, run=0):
    """msg/s of PUTs with the same guarantees the filter asks for."""
    body = os.urandom(size)
    etag = hashlib.md5(body).hexdigest()
    connections = [swift.connection(retries=0) for _ in range(sessions)]
    for connection in connections:
        connection.get_auth()  # authenticate outside the timed loop, as the filter does

    def work(index):
        connection = connections[index % sessions]
        connection.put_object(CONTAINER, f"raw/{size}/{sessions}/{run}/{index}", body, etag=etag,
                              content_type="message/rfc822",
                              headers={"If-None-Match": "*"})

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
        list(pool.map(work, range(messages)))
    return messages / (time.monotonic() - started)


def end_to_end_rate(swift, postfix, size, sessions, messages, *, filter_pid):
    """(msg/s, CPU seconds by component) of smtp-source through Postfix and the filter.

    Checks that every message was stored.
    """
    before = object_count(swift)
    cpu_before = component_cpu(filter_pid, swift, postfix)
    started = time.monotonic()
    smtp_source(postfix, size, sessions, messages)
    elapsed = time.monotonic() - started
    cpu_after = component_cpu(filter_pid, swift, postfix)
    stored = object_count(swift) - before
    if stored != messages:
        raise SystemExit(f"only {stored} of {messages} messages were stored")
    return messages / elapsed, {name: cpu_after[name] - cpu_before[name] for name in cpu_after}


def component_cpu(filter_pid, swift, postfix):
    """CPU seconds so far of the filter, Postfix, Swift and smtp-source.

    Where the time goes when the filter is slower than raw Swift: on two
    shared cores every component's CPU is time the others wait.
    """
    return {"filter": cpu_seconds(filter_pid), "Postfix": postfix_cpu_seconds(postfix),
            "Swift": cpu_seconds(swift.process.pid), "smtp-source": children_cpu_seconds()}


def postfix_cpu_seconds(postfix):
    """CPU of the instance's processes, and of those that exited (their master's cutime).

    Postfix's master passes MAIL_CONFIG to every daemon it starts.
    """
    marker = f"MAIL_CONFIG={postfix.config_dir}".encode()
    total = 0.0
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            total += cpu_seconds(entry.name, with_children=True)
        except OSError:  # exited while we looked
            continue
    return total


def smtp_source(postfix, size, sessions, messages):
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
                    "-f", "bench@origin.test", "-t", RECIPIENT,
                    f"127.0.0.1:{postfix.smtp_port}"], check=True, timeout=3600)


def cpu_seconds(pid, *, with_children=False):
    """User + system CPU time of process `pid` so far, all its threads.

    `with_children` adds what its exited (and reaped) children used.
    """
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def load_average():
    return float(pathlib.Path("/proc/loadavg").read_text().split()[0])


def proc_status(pid, field):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_rss(pid):
    pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM


def peak_rss_for_large_message(ini, workdir, size):
    """Peak RSS above idle while one `size`-byte message is received and stored."""
    with FilterProcess(ini, workdir, "--log-target", "stderr",
                       "--max-message-size", str(size * 2)) as proxy:
        with smtplib.SMTP(*proxy.address) as client:
            client.sendmail("a@o.test", [RECIPIENT], b"warm-up\r\n")
        pid = proxy.process.pid
        idle = proc_status(pid, "VmRSS")
        reset_peak_rss(pid)
        line = b"x" * 998 + b"\r\n"
        body = b"Subject: large\r\n\r\n" + line * (size // len(line))
        with smtplib.SMTP(*proxy.address, timeout=300) as client:
            client.sendmail("a@o.test", [RECIPIENT], body)
        return idle, proc_status(pid, "VmHWM") - idle


def idle_rss(ini, workdir):
    """VmRSS of a fresh filter that has stored one message (so it holds a token)."""
    with FilterProcess(ini, workdir, "--log-target", "stderr") as proxy:
        with smtplib.SMTP(*proxy.address, timeout=120) as client:
            client.sendmail("a@o.test", [RECIPIENT], b"Subject: warm-up\r\n\r\nx\r\n")
        return proc_status(proxy.process.pid, "VmRSS")


def keystone_idle_rss(workdir):
    """Idle RSS of a filter whose account uses Keystone v3 (a real Keystone and Swift)."""
    from tests.support.keystone import KeystoneServer  # noqa: PLC0415 - only for this figure
    from tests.test_keystone import write_keystone_ini  # noqa: PLC0415

    with KeystoneServer(workdir / "keystone") as keystone, \
            SwiftServer(workdir / "keystone-swift", keystone=keystone):
        ini = write_keystone_ini(workdir / "keystone.ini", keystone)
        result = run_swiftdrop("check", "--config", str(ini), timeout=300)
        if result.returncode:
            raise SystemExit(result.stdout + result.stderr)
        return idle_rss(ini, workdir)


def cli_start_times(swift, workdir, runs=5):
    """(median wall time, median CPU time, load) of each short-lived command.

    ``queue claim`` claims a real message from a queue of `runs` messages
    (each run one). The CPU time (user + system of the child) hardly depends
    on the load of a shared machine; the wall time does.
    """
    ini = write_ini(workdir / "queue.ini", swift, container=QUEUE_CONTAINER)
    namer, connection = MaildirNamer("mx.bench"), swift.connection()
    for _ in range(runs):
        connection.put_object(QUEUE_CONTAINER, namer.name(5), b"x\r\n")
    commands = {"swiftdrop --help": ["--help"],
                "swiftdrop check --config-only": ["check", "--config-only", "--config", str(ini)],
                "swiftdrop queue claim": ["queue", "--config", str(ini), "claim"]}
    times = {}
    for label, arguments in commands.items():
        walls, cpus = [], []
        for _ in range(runs):
            cpu_before = children_cpu_seconds()
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "swiftdrop", *arguments], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walls.append(time.monotonic() - started)
            cpus.append(children_cpu_seconds() - cpu_before)
        times[label] = (statistics.median(walls), statistics.median(cpus), load_average())
    return times


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_case(swift, postfix, proxy, size, *, sessions, messages, repeat):
    """Medians of `repeat` runs.

    Returns (raw msg/s, SwiftDrop msg/s, CPU ms per message by component,
    Swift's CPU ms per raw PUT, (lowest, highest) load average).
    """
    raws, rates, cpus, raw_swift_cpus, loads = [], [], [], [], [load_average()]
    for run in range(repeat):
        swift_before = cpu_seconds(swift.process.pid)
        raws.append(raw_put_rate(swift, size, sessions, messages, run=run))
        raw_swift_cpus.append(cpu_seconds(swift.process.pid) - swift_before)
        rate, cpu = end_to_end_rate(swift, postfix, size, sessions, messages,
                                    filter_pid=proxy.process.pid)
        rates.append(rate)
        cpus.append(cpu)
        loads.append(load_average())
    per_message = {name: statistics.median(cpu[name] for cpu in cpus) * 1000 / messages
                   for name in cpus[0]}
    return (statistics.median(raws), statistics.median(rates), per_message,
            statistics.median(raw_swift_cpus) * 1000 / messages, (min(loads), max(loads)))


def peak_rss_concurrent(postfix, proxy, sessions, size):
    """The filter's peak RSS while `sessions` sessions each send `size`-byte messages."""
    pid = proxy.process.pid
    reset_peak_rss(pid)
    smtp_source(postfix, size, sessions, sessions * 2)
    return proc_status(pid, "VmHWM")


def direct_cpu_per_mb(ini, workdir, messages, size=1024 * 1024):
    """The filter's CPU ms per MB for `messages` sent straight to it, one session each."""
    with FilterProcess(ini, workdir, "--log-target", "stderr") as proxy:
        line = b"x" * 998 + b"\r\n"
        body = b"Subject: tls\r\n\r\n" + line * (size // len(line))
        with smtplib.SMTP(*proxy.address, timeout=120) as client:
            client.sendmail("a@o.test", [RECIPIENT], b"Subject: warm-up\r\n\r\nx\r\n")
        before = cpu_seconds(proxy.process.pid)
        for _ in range(messages):
            with smtplib.SMTP(*proxy.address, timeout=120) as client:
                client.sendmail("a@o.test", [RECIPIENT], body)
        return (cpu_seconds(proxy.process.pid) - before) * 1000 / messages / (len(body) / 2**20)


def tls_cpu_per_mb(workdir, messages):
    """(CPU ms per MB over plain HTTP, over TLS): the same Swift, once behind stunnel."""
    from tests.support.tlsfront import TestCA, TLSFront  # noqa: PLC0415 - only for --tls

    ca = TestCA(workdir / "ca")
    cert, key = ca.issue("swift", "IP:127.0.0.1")
    with SwiftServer(workdir / "tls-swift", storage_url_scheme="https") as swift, \
            TLSFront(workdir / "tls", swift.port, cert, key) as front:
        tls_ini = write_ini(workdir / "tls.ini", swift, auth_url=f"{front.url}/auth/v1.0",
                            cacert=ca.cert)
        tls = direct_cpu_per_mb(tls_ini, workdir, messages)
    with SwiftServer(workdir / "plain-swift") as swift:
        plain = direct_cpu_per_mb(write_ini(workdir / "plain.ini", swift), workdir, messages)
    return plain, tls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages-5k", type=int, default=400)
    parser.add_argument("--messages-1m", type=int, default=80)
    parser.add_argument("--large-mb", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (medians)")
    parser.add_argument("--no-keystone", action="store_true",
                        help="skip the idle RSS with a Keystone v3 account")
    parser.add_argument("--tls", action="store_true",
                        help="also the filter's CPU per MB with TLS to Swift (stunnel)")
    options = parser.parse_args()
    mib = 2**20

    with tempfile.TemporaryDirectory(prefix="swiftdrop-bench-") as scratch:
        workdir = pathlib.Path(scratch)
        with SwiftServer(workdir / "swift") as swift:
            ini = write_ini(workdir / "swiftdrop.ini", swift)
            idle = idle_rss(ini, workdir)
            with FilterProcess(ini, workdir, "--log-target", "stderr") as proxy, \
                    postfix_instance(proxy_filter=f"inet:127.0.0.1:{proxy.port}",
                                     relay_domains=["example.com"],
                                     recipients=[RECIPIENT]) as postfix:
                print(f"{'size':>6} {'sessions':>8} {'raw PUT msg/s':>14} "
                      f"{'SwiftDrop msg/s':>16} {'ratio':>6} {'CPU ms/MB':>10} "
                      f"{'CPU ms/msg':>10} {'load avg':>10}")
                total, shares = 0, []
                for size, label, messages in ((5 * 1024, "5 KB", options.messages_5k),
                                              (1024 * 1024, "1 MB", options.messages_1m)):
                    for sessions in (1, 8):
                        raw, e2e, cpu, raw_swift, loads = measure_case(
                            swift, postfix, proxy, size, sessions=sessions, messages=messages,
                            repeat=options.repeat)
                        total += messages * options.repeat
                        print(f"{label:>6} {sessions:>8} {raw:>14.1f} {e2e:>16.1f} "
                              f"{e2e / raw:>6.2f} {cpu['filter'] * mib / size:>10.1f} "
                              f"{cpu['filter']:>10.2f} {loads[0]:>4.1f}-{loads[1]:<4.1f}",
                              flush=True)
                        shares.append((label, sessions, e2e, cpu, raw_swift))
                print("CPU ms per message, medians (wall: 1000 / msg/s x sessions; on 2 cores "
                      "the CPU of every part is time the others wait):")
                print(f"{'size':>6} {'sessions':>8} {'wall':>7} {'filter':>7} {'Postfix':>8} "
                      f"{'Swift':>6} {'smtp-source':>11} {'filter share':>12} "
                      f"{'Swift (raw PUT)':>15}")
                for label, sessions, e2e, cpu, raw_swift in shares:
                    share = cpu["filter"] / sum(cpu.values())
                    print(f"{label:>6} {sessions:>8} {1000 * sessions / e2e:>7.1f} "
                          f"{cpu['filter']:>7.2f} {cpu['Postfix']:>8.2f} {cpu['Swift']:>6.2f} "
                          f"{cpu['smtp-source']:>11.2f} {share:>12.0%} {raw_swift:>15.2f}")
                auths = proxy.log().count("authenticated ")
                print(f"auth requests: {auths} for {total} messages "
                      f"= {auths * 1000 / total:.2f} per 1,000 messages (one account)")
                peak20 = peak_rss_concurrent(postfix, proxy, 20, mib)
                print(f"filter peak RSS with 20 concurrent 1 MB sessions: {peak20 / mib:.1f} MiB "
                      f"(load {load_average():.1f})")
            _, peak = peak_rss_for_large_message(ini, workdir, options.large_mb * mib)
            print(f"filter RSS: idle {idle / mib:.1f} MiB (tempauth, after one message); "
                  f"peak while storing a {options.large_mb} MB message: +{peak / mib:.1f} MiB "
                  f"above idle")
            for label, (seconds, cpu, load) in cli_start_times(swift, workdir).items():
                print(f"{label}: {seconds:.3f} s wall, {cpu:.3f} s CPU (medians of 5, "
                      f"load {load:.1f})")
        if not options.no_keystone:
            print(f"filter RSS: idle {keystone_idle_rss(workdir) / mib:.1f} MiB "
                  "(Keystone v3, after one message)")
        if options.tls:
            plain, tls = tls_cpu_per_mb(workdir, options.messages_1m)
            print(f"filter CPU per MB, 1 MB messages straight to it, one session: "
                  f"{plain:.2f} ms over HTTP, {tls:.2f} ms over TLS (load {load_average():.1f})")


if __name__ == "__main__":
    main()
