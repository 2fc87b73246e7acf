"""The paper's headline measurement: how many dense steps buy a Switch model's quality.

A command over switch_experiments/repro_speedup.py (its code, options and notes).
"""

import sys

from switch_experiments.repro_speedup import main

if __name__ == "__main__":
  sys.exit(main())
