"""Per-request cost of GeofenceMiddleware against bare apps: the in-process and end-to-end parts of the suite.

    python benchmarks/middleware.py [--instructions] [--no-e2e] [--n 5000] [--rounds 7] [--seconds 4]

Kept for the optimisation loop; it runs ``benchmarks/suite.py --only inprocess,e2e`` with the same options
(``--only inprocess --instructions`` for callgrind counts alone). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import suite


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, help="requests per in-process round")
    parser.add_argument("--rounds", type=int, help="rounds; medians are reported")
    parser.add_argument("--seconds", type=int, help="wrk duration per end-to-end run")
    parser.add_argument("--no-e2e", action="store_true", help="skip the uvicorn + wrk measurement")
    parser.add_argument("--instructions", action="store_true", help="also count instructions with callgrind")
    args = parser.parse_args(argv)
    forwarded = ["--only", "inprocess" if args.no_e2e else "inprocess,e2e"]
    forwarded.append("--instructions" if args.instructions else "--no-instructions")
    for name in ("n", "rounds", "seconds"):
        if getattr(args, name) is not None:
            forwarded += [f"--{name}", str(getattr(args, name))]
    return suite.main(forwarded)


if __name__ == "__main__":
    raise SystemExit(main())
