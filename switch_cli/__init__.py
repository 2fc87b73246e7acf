"""The ``switch_mesh_transformer`` application: t5's command line over the project's packages.

It sits above both libraries it composes (``mtf_switch``, the layers; ``tasks``, the data),
so neither of them imports it:

  main.py       the entry point: compat repair, registrations, then t5's ``console_entry_point``
  gin_parse.py  mesh-tf's gin parsing step, with the project's steps added
  dtypes.py     the variable and activation dtypes the user's gin asked for, honoured on CPU
  preflight.py  checks that run before TensorFlow builds or starts anything
  infer.py      infer / score modes: one checkpoint (default the latest), UTF-8 text, exit
"""


class PreflightError(ValueError):
  """A run that cannot do what it was asked; the message says why and what to do.

  The command prints the message alone (no traceback) and exits with status 1.
  """
