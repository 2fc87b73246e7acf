"""Builds a paper model's TPU training step on this CPU machine and reports what each core holds.

A command over switch_experiments/tpu_plan.py (its code, options and notes).
"""

import sys

from switch_experiments.tpu_plan import main

if __name__ == "__main__":
  sys.exit(main())
