"""``switch_mesh_transformer``: t5's ``t5_mesh_transformer`` made to work and to check its input.

    switch_mesh_transformer --model_dir=/tmp/m --gin_file=models/switch_tiny.gin ...
    python -m switch_cli ...          (the same; so is the older ``python -m mtf_switch.cli``)

What it adds to t5's command line, whose flags it leaves untouched:
  * the mesh-tensorflow compat repair, before t5 is imported at all (t5 imports
    mesh_tensorflow before it reads ``--module_import``);
  * the project's gin configurables, tasks and gin/ directory (``--gin_file=models/x.gin``);
  * the dtypes the user's gin asks for (``switch_cli.dtypes``): t5 resets them to float32 on
    CPU, silently;
  * the pre-flight checks of ``switch_cli.preflight`` (checkpoint present and of this model,
    vocabulary loads, nothing to train, stale temporary files), before TensorFlow starts.
"""

import os
import sys

from mtf_switch import compat  # noqa: F401  (must precede every t5 / mesh_tensorflow import)

PROJECT_GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")


def main() -> int:
  from t5.models import mesh_transformer_main

  import mtf_switch  # noqa: F401  (registers the gin configurables)
  import tasks  # noqa: F401  (registers the project's seqio tasks, mixtures and text_files)

  import gin

  from switch_cli import PreflightError, gin_parse, preflight

  # The project's gin/ (models/, mesh/) is searched like t5's own gin directory, so
  # --gin_file=models/switch_tiny.gin works from any directory.
  gin.add_config_file_search_path(PROJECT_GIN_DIR)
  requested = gin_parse.install(
      mesh_transformer_main,
      after_parse=[preflight.register_text_files, preflight.register_finetune_vocabulary,
                   preflight.check_task])
  preflight.install(mesh_transformer_main, before_run=requested.restore)
  sys.argv[0] = "t5_mesh_transformer"
  try:
    return mesh_transformer_main.console_entry_point()
  except PreflightError as e:
    print(f"switch_mesh_transformer: error: {e}", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
  sys.exit(main())
