"""Training-stability tables at small scale: Table 2 (selective precision), Table 3 (init scale,
three seeds) and Appendix C (router exploration policies).

A command over switch_experiments/repro_stability.py (its code, options and notes).
"""

import sys

from switch_experiments.repro_stability import main

if __name__ == "__main__":
  sys.exit(main())
