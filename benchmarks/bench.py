"""The benchmark's entry point: ``python benchmarks/bench.py --help``. The code is the
``seres_bench`` package next to this file; ``benchmarks/README.md`` explains the protocol and
how to read the output."""

import sys

from seres_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
