"""GLUE and SuperGLUE averages per checkpoint, as t5 and the papers compute them.

A command over switch_experiments/benchmark_averages.py (its code, options and notes).
"""

import sys

from switch_experiments.benchmark_averages import main

if __name__ == "__main__":
  sys.exit(main())
