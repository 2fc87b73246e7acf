"""Distil a Switch teacher into its FLOP-matched dense student (paper Section 4.2, Table 6).

A command over switch_experiments/distill.py (its code, options and notes).
"""

import sys

from switch_experiments.distill import main

if __name__ == "__main__":
  sys.exit(main())
