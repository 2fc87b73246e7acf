"""Train a small Switch language model and its FLOP-matched dense twin; compare their quality.

A command over switch_experiments/switch_vs_dense.py (its code, options and notes).
"""

import sys

from switch_experiments.switch_vs_dense import main

if __name__ == "__main__":
  sys.exit(main())
