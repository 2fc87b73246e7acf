"""The ``switch_mesh_transformer`` application: t5's command line over the project's packages.

It sits above both libraries it composes (``mtf_switch``, the layers; ``tasks``, the data),
so neither of them imports it:

  main.py       the entry point: compat repair, registrations, then t5's ``console_entry_point``
  patches.py    every patch of mesh-tf and TensorFlow, why, and ``install``, which applies them
  gin_parse.py  mesh-tf's gin parsing step, with the project's steps added
  dtypes.py     the variable and activation dtypes the user's gin asked for, honoured on CPU
  preflight.py  checks that run before TensorFlow builds or starts anything
  infer.py      infer / score modes: one checkpoint (default the latest), UTF-8 text, exit
"""

import os

# oneDNN's CPU kernels. TensorFlow 2.15 turns them on by default only on some Intel CPUs, and
# reads this variable once, when it is first imported: hence here, before any entry point of the
# application imports TensorFlow. A user's own setting (0 turns them off) is kept. On this
# project's 2-core AMD EPYC the CLI trained t5_tiny 1.17x and switch_tiny 1.23x faster with it
# (rotated A/B under load, tools/bench_cli_training.py --variants default,onednn_off; see
# docs/performance.md).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


class PreflightError(ValueError):
  """A run that cannot do what it was asked; the message says why and what to do.

  The command prints the message alone (no traceback) and exits with status 1.
  """
