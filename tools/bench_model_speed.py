"""Training examples per second of a small Switch model, its FLOP-matched dense twin, and the same
model built with moe.py's Switch layer (the speed column of the paper's Table 1).

A command over switch_experiments/bench_model_speed.py (its code, options and notes).
"""

import sys

from switch_experiments.bench_model_speed import main

if __name__ == "__main__":
  sys.exit(main())
