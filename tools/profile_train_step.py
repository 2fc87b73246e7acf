"""Where a training step of ``switch_mesh_transformer`` spends its time, by op type and by part.

A command over switch_experiments/profile_train_step.py (its code, options and notes).
"""

import sys

from switch_experiments.profile_train_step import main

if __name__ == "__main__":
  sys.exit(main())
