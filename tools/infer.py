"""Text file in, text file out: decode (or score) with a model directory's checkpoint.

A command over switch_experiments/infer.py (its code, options and notes).
"""

import sys

from switch_experiments.infer import main

if __name__ == "__main__":
  sys.exit(main())
