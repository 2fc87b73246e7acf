"""Table 1 at small scale: dense, top-2 MoE and Switch at capacity factors 2.0, 1.25, 1.0.

A command over switch_experiments/repro_table1.py (its code, options and notes).
"""

import sys

from switch_experiments.repro_table1 import main

if __name__ == "__main__":
  sys.exit(main())
