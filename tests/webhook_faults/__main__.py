"""The full webhook fault run: ``python -m tests.webhook_faults [--messages 1000]``.

Numbered messages seeded into ``cur/``, several ``swiftdrop queue run``
webhook workers and ``recover`` every second, a receiver that answers
2xx, 5xx, 429, 406 (for messages chosen up front), hangs, answers slowly,
resets, and presents a wrong certificate for a while; then every message
classed as once, marked, refused, silent duplicate or lost
(tests/webhook_faults/books.py). Exits 1 if a message was lost, a repeat
went unmarked, or a signature or body was wrong.
"""

import argparse
import pathlib
import shutil
import sys
import tempfile

from tests.consumer_faults.rig import Rig
from tests.webhook_faults.rig import details, run_ledger, table


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.webhook_faults",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages (default 1000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory "
                        "(the receiver's ledger, worker and recover logs)")
    args = parser.parse_args(argv)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="swiftdrop-webhook-faults-"))
    try:
        with Rig(workdir) as rig:
            result = run_ledger(rig, args.messages, seed_value=args.seed)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(details(result))
    print()
    print(table([result]))
    kept = result.books.promise_kept
    print("\nresult:", "no message lost, every repeat marked, every signature good" if kept
          else "promise broken")
    return 0 if kept else 1


if __name__ == "__main__":
    sys.exit(main())
