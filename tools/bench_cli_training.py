"""Training speed of the tiny dense and Switch models through ``switch_mesh_transformer``.

A command over switch_experiments/bench_cli_training.py (its code, options and notes).
"""

import sys

from switch_experiments.bench_cli_training import main

if __name__ == "__main__":
  sys.exit(main())
