"""The Switch layers' routing statistics at every checkpoint of a finished run, replayed.

A command over switch_experiments/replay_routing.py (its code, options and notes).
"""

import os
import sys

if __name__ == "__main__":
  if os.environ.get("PYTHONHASHSEED") != "0":
    # Mesh-TF hashes strings to seed random ops: restart with a fixed hash seed, before
    # anything is imported.
    os.execve(sys.executable, [sys.executable, *sys.argv],
              dict(os.environ, PYTHONHASHSEED="0"))
  from switch_experiments.replay_routing import main

  sys.exit(main())
