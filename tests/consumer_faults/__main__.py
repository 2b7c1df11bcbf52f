"""The full consumer fault run: ``python -m tests.consumer_faults [--messages 1000]``.

Each fault class on its own run (``--class NAME`` for one): numbered
messages seeded into ``cur/``, several ``swiftdrop queue run`` workers and
``recover`` every second, the fault, then every message classed as once,
redelivered and marked, silent duplicate or lost (tests/consumer_faults/ledger.py).
Exits 1 if any class has a lost message or a silent duplicate.
"""

import argparse
import pathlib
import shutil
import sys
import tempfile

from tests.consumer_faults.rig import CLASSES, Rig, details, run_class, table


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.consumer_faults",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000,
                        help="messages per fault class (default 1000)")
    parser.add_argument("--class", dest="classes", action="append", choices=list(CLASSES),
                        metavar="NAME", help=f"only this class (repeatable): "
                        f"{', '.join(CLASSES)}")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory "
                        "(ledgers, worker and recover logs)")
    args = parser.parse_args(argv)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="swiftdrop-consumer-faults-"))
    results = []
    try:
        with Rig(workdir) as rig:
            for name in args.classes or list(CLASSES):
                result = run_class(rig, name, args.messages, seed_value=args.seed)
                results.append(result)
                print(details(result), flush=True)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(results))
    broken = [r.name for r in results if not r.books.promise_kept]
    print("\nresult:", f"promise broken in {', '.join(broken)}" if broken
          else "no message lost, every repeat marked")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
