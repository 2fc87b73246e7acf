"""Training speed side by side: this project's CLI against Hugging Face's PyTorch T5 / Switch.

A command over switch_experiments/bench_peer_training.py (its code, options and notes).
"""

import sys

from switch_experiments.bench_peer_training import main

if __name__ == "__main__":
  sys.exit(main())
