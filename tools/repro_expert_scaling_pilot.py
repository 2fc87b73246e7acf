"""Pilot of the expert-scaling run: which design shows the Switch advantage soonest on a CPU.

A command over switch_experiments/repro_expert_scaling_pilot.py (its code, options and notes).
"""

import sys

from switch_experiments.repro_expert_scaling_pilot import main

if __name__ == "__main__":
  sys.exit(main())
