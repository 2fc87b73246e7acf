"""Fine-tune pre-trained models on GLUE and SuperGLUE, score every checkpoint, compare them.

A command over switch_experiments/finetune_glue.py (its code, options and notes).
"""

import sys

from switch_experiments.finetune_glue import main

if __name__ == "__main__":
  sys.exit(main())
