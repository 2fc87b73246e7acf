"""Pre-train a Switch model and its dense twin, fine-tune both on SST-2, report dev accuracy.

A command over switch_experiments/finetune_sst2.py (its code, options and notes).
"""

import sys

from switch_experiments.finetune_sst2 import main

if __name__ == "__main__":
  sys.exit(main())
