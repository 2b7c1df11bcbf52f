"""Count what a running filter holds open, to prove that bad input leaks nothing.

A leak in a long-running filter is invisible in any single session and fatal
after a million: a socket not closed after a timeout, a spool file not
removed after a refused message. So the bad-input tests take a snapshot of
the filter's open file descriptors and its temporary files when it is idle,
run a case, and wait until the snapshot is the same again.

Temporary files are counted twice: as names in the filter's own TMPDIR (the
filter is started with one, so the count is exact) and as open descriptors
pointing into it, because Python's ``TemporaryFile`` uses ``O_TMPFILE`` on
Linux and a spool file then never has a name at all.

Sockets to Swift are left out of the comparison: the filter keeps a pool of
keep-alive connections per account that grows to the highest concurrency it
has seen and is then reused. Everything else (the listener, client
connections, files, pipes) must come back to exactly the idle count.
"""

from dataclasses import dataclass
import os
import pathlib
import time

TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


@dataclass(frozen=True)
class Resources:
    descriptors: tuple  # what each non-Swift descriptor points at, sorted
    swift_sockets: int
    tmp_names: tuple  # files under TMPDIR
    tmp_descriptors: int  # open descriptors into TMPDIR, named or O_TMPFILE

    def comparable(self):
        return (self.descriptors, self.tmp_names, self.tmp_descriptors)


class ResourceProbe:
    """Snapshots of one process's descriptors and of the files in its TMPDIR."""

    def __init__(self, pid, tmpdir, swift_port, listen_port):
        self.pid = pid
        self.tmpdir = pathlib.Path(tmpdir).resolve()
        self.swift_port = swift_port
        self.listen_port = listen_port

    def idle(self, timeout=15):
        """The snapshot once no client connection is open: the baseline for the cases."""
        deadline = time.monotonic() + timeout
        while self._tcp_sockets(local_port=self.listen_port, listening=False):
            assert time.monotonic() < deadline, "a client connection stays open"
            time.sleep(0.05)
        return self.snapshot()

    def snapshot(self):
        swift_inodes = self._tcp_sockets(remote_port=self.swift_port)
        descriptors, swift_sockets, tmp_descriptors = [], 0, 0
        fd_dir = pathlib.Path(f"/proc/{self.pid}/fd")
        for entry in fd_dir.iterdir():
            try:
                target = os.readlink(entry)
            except FileNotFoundError:  # closed while we looked
                continue
            if target.startswith(str(self.tmpdir) + "/"):
                tmp_descriptors += 1
            if target.startswith("socket:[") and target[8:-1] in swift_inodes:
                swift_sockets += 1
                continue
            descriptors.append(_kind(target, self.tmpdir))
        tmp_names = tuple(sorted(str(path.relative_to(self.tmpdir))
                                 for path in self.tmpdir.rglob("*")))
        return Resources(tuple(sorted(descriptors)), swift_sockets, tmp_names, tmp_descriptors)

    def _tcp_sockets(self, remote_port=None, local_port=None, listening=True):
        """Inodes of TCP sockets in the process's network namespace that match.

        Sockets the process has closed but the kernel still winds down
        (TIME_WAIT) have inode 0 and are left out.
        """
        inodes = set()
        for table in ("tcp", "tcp6"):
            path = pathlib.Path(f"/proc/{self.pid}/net/{table}")
            if not path.exists():
                continue
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if inode == "0" or (not listening and state == TCP_LISTEN):
                    continue
                if remote_port is not None and int(remote.rsplit(":", 1)[1], 16) != remote_port:
                    continue
                if local_port is not None and int(local.rsplit(":", 1)[1], 16) != local_port:
                    continue
                inodes.add(inode)
        return inodes

    def wait_until_back_to(self, baseline, timeout=15):
        """Poll until the process holds what it held at `baseline`; fail with the difference.

        A session's thread closes its socket only after the client has gone,
        so right after a case there may still be one descriptor more: poll,
        do not sleep a fixed time.
        """
        deadline = time.monotonic() + timeout
        while True:
            now = self.snapshot()
            if now.comparable() == baseline.comparable():
                return now
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"filter {self.pid} did not return to its idle resources:\n"
                    f"  descriptors before {_count(baseline.descriptors)}\n"
                    f"  descriptors after  {_count(now.descriptors)}\n"
                    f"  TMPDIR before {baseline.tmp_names} ({baseline.tmp_descriptors} open)\n"
                    f"  TMPDIR after  {now.tmp_names} ({now.tmp_descriptors} open)")
            time.sleep(0.05)


def _kind(target, tmpdir):
    """A descriptor's target, with inode numbers dropped so that equal kinds compare equal."""
    if target.startswith(("socket:[", "pipe:[", "anon_inode:")):
        return target.split("[")[0].rstrip(":") if "[" in target else target
    if target.startswith(str(tmpdir) + "/"):
        return "TMPDIR file"
    return target


def _count(kinds):
    counts = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))
