"""The ``t5_mesh_transformer`` command line, made to work on the pinned TensorFlow.

t5's own console script imports mesh_tensorflow before it reads ``--module_import``, so the
compat repair has to happen before t5 is imported at all. This module does that, registers the
project's gin configurables and tasks, and hands over to t5's ``console_entry_point`` with the
user's flags untouched:

    switch_mesh_transformer --model_dir=/tmp/m --gin_file=gin/models/switch_tiny.gin ...
    python -m mtf_switch.cli ...            (the same)
"""

import os
import sys

from mtf_switch import compat  # noqa: F401  (must precede every t5 / mesh_tensorflow import)


PROJECT_GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")


def main() -> int:
  from t5.models import mesh_transformer_main

  import mtf_switch  # noqa: F401  (registers the gin configurables)
  import tasks  # noqa: F401  (registers the project's seqio tasks and mixtures)

  import gin

  # The project's gin/ (models/, mesh/) is searched like t5's own gin directory, so
  # --gin_file=models/switch_tiny.gin works from any directory.
  gin.add_config_file_search_path(PROJECT_GIN_DIR)
  sys.argv[0] = "t5_mesh_transformer"
  return mesh_transformer_main.console_entry_point()


if __name__ == "__main__":
  sys.exit(main())
