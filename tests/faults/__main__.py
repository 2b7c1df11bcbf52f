"""The full fault run: ``PYTHONPATH=. .venv/bin/python -m tests.faults [--messages 1000]``.

One stream of numbered messages through Postfix, the filter and Swift (behind
a real Keystone by default, ``--auth``) with every fault mixed in at random
(optionally each fault on its own first, ``--each N``), then the ledger of
every run. Exits 1 if any ledger shows a
broken promise: a 250 not in Swift, a deferred message not stored after the
faults, a partial or stray object.
"""

import argparse
import shutil
import sys

from tests.faults.rig import AUTHS, FAULTS, Rig, faults_for, run_scenario
from tests.support.postfix import make_workdir


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.faults",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000,
                        help="messages in the mixed stream (default 1000)")
    parser.add_argument("--each", type=int, default=0, metavar="N",
                        help="first run each fault on its own with N messages")
    parser.add_argument("--auth", choices=AUTHS, default="password",
                        help="how the filter authenticates: Keystone with a password "
                             "(default) or an application credential, or Swift's tempauth")
    parser.add_argument("--faults", help="comma-separated subset of: "
                        f"{', '.join(FAULTS)} (default: all that apply to --auth)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sessions", type=int, default=4, help="concurrent SMTP clients")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    names = ([name.strip() for name in args.faults.split(",") if name.strip()]
             if args.faults else faults_for(args.auth))
    unknown = sorted(set(names) - set(faults_for(args.auth)))
    if unknown:
        parser.error(f"unknown fault(s) with --auth {args.auth}: {', '.join(unknown)}")
    workdir = make_workdir("swiftdrop-faults-")
    broken = []
    try:
        with Rig(workdir, sessions=args.sessions, auth=args.auth) as rig:
            if rig.spool_dir is None and "spool-full" in names:
                print("cannot mount a tmpfs (not root?): leaving out spool-full")
                names.remove("spool-full")
            runs = [(name, [name], args.each) for name in names if args.each]
            runs.append(("mixed", names, args.messages))
            for title, faults, count in runs:
                summary = run_scenario(rig, title, faults, count, seed=args.seed,
                                       gap=(5, 25) if title == "mixed" else (2, 6))
                print(f"\n== {title}: {count} messages"
                      f"{'' if summary.promise_kept else '  PROMISE BROKEN'}")
                print(summary.table(), flush=True)
                if not summary.promise_kept:
                    broken.append(title)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\nresult:", f"promise broken in {', '.join(broken)}" if broken
          else "every 250 is in Swift byte for byte, every 4xx stored on retry")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
