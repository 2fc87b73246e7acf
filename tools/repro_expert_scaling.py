"""Expert scaling at a fixed compute per token (paper Figures 1 and 4, Appendix D).

A command over switch_experiments/repro_expert_scaling.py (its code, options and notes).
"""

import sys

from switch_experiments.repro_expert_scaling import main

if __name__ == "__main__":
  sys.exit(main())
