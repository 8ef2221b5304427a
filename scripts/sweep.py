"""The reference design-space sweep: arrays of 8 to 32 rows and columns by bus widths of
64 to 256 bits, on MiniLM encoding 128 tokens and one SmolLM2 decode step with 128 cached
positions (27 points, about 18 minutes on two cores with an empty schedule cache).

It is ``llmchip sweep`` with these defaults (any option given here overrides them, e.g.
``--rows 4,8,16,32 --cols 4,8,16,32``, ``--fpga ecp5-85k`` or ``--rtl-check 2``);
results, plots and the tables go to ``build/sweep``. Arrays 4 wide are left out by
default: their schedule searches take several minutes per point the first time.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python scripts/sweep.py [llmchip sweep options]
"""

from __future__ import annotations

import sys

from llmchip.cli import main

DEFAULTS = ["--rows", "8,16,32", "--cols", "8,16,32", "--bus-bits", "64,128,256",
            "--workloads", "minilm,smollm2-decode", "--seq-len", "128",
            "--out", "build/sweep", "--plot"]

if __name__ == "__main__":
    # argparse keeps the last value of an option, so the caller's options win.
    sys.exit(main(["sweep", *DEFAULTS, *sys.argv[1:]]))
