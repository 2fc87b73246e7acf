"""The six matrix products of an FFN training step, one at a time: experts against dense.

A command over switch_experiments/bench_expert_matmuls.py (its code, options and notes).
"""

import sys

from switch_experiments.bench_expert_matmuls import main

if __name__ == "__main__":
  sys.exit(main())
