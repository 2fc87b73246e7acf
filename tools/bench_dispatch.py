"""Forward + backward time of one Switch layer: einsum path, gather path, moe.py, dense FFN.

A command over switch_experiments/bench_dispatch.py (its code, options and notes).
"""

import sys

from switch_experiments.bench_dispatch import main

if __name__ == "__main__":
  sys.exit(main())
