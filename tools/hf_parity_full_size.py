"""Full-size check of the HF import: google/switch-base-8's exact config, random weights.

A command over switch_experiments/hf_parity_full_size.py (its code, options and notes).
"""

import sys

from switch_experiments.hf_parity_full_size import main

if __name__ == "__main__":
  sys.exit(main())
