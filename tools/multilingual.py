"""Multilingual pre-training, dense vs Switch, per-language quality (paper Section 4.3, Fig. 7).

A command over switch_experiments/multilingual.py (its code, options and notes).
"""

import sys

from switch_experiments.multilingual import main

if __name__ == "__main__":
  sys.exit(main())
