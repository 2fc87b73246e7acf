"""Table 9 of the Switch Transformer paper, recomputed from the project's gin model files.

A command over switch_experiments/table9.py (its code, options and notes).
"""

import sys

from switch_experiments.table9 import main

if __name__ == "__main__":
  sys.exit(main())
