"""Steps/s and all-to-all bytes of switch_tiny trained over 1, 2 and 4 worker processes.

A command over switch_experiments/bench_cluster.py (its code, options and notes).
"""

import sys

from switch_experiments.bench_cluster import main

if __name__ == "__main__":
  sys.exit(main())
