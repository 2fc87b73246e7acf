"""The ``switch_mesh_transformer`` application: t5's command line over the project's packages.

It sits above both libraries it composes (``mtf_switch``, the layers; ``tasks``, the data),
so neither of them imports it:

  main.py       the entry point: compat repair, registrations, then t5's ``console_entry_point``
  dtypes.py     the variable and activation dtypes the user's gin asked for, honoured on CPU
  preflight.py  checks that run before TensorFlow builds or starts anything
"""
