"""Loading the project's gin files outside the command line, as ``switch_mesh_transformer`` does.

Used by the tools that build a model without running it (tools/table9.py, tools/tpu_plan.py),
the checkpoint converters (mtf_switch/convert) and the tests. Importing this module imports
the ``mtf_switch`` package first: the compat repair and the project's gin configurables.
"""

import logging
import os
from typing import Sequence

from mtf_base import paths

PROJECT_GIN_DIR = paths.gin_dir()


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str] = ()) -> None:
  """Loads gin as the CLI does: mesh-tf's defaults.gin, then the files, then the bindings.

  Any earlier gin configuration is cleared first. File names resolve against the project's
  gin/ directory, then t5's (models/bi_v1.gin, dataset.gin), as on the switch_mesh_transformer
  command line.
  """
  import pkg_resources
  import t5.models

  import gin
  gin.clear_config()
  gin.add_config_file_search_path(PROJECT_GIN_DIR)
  gin.add_config_file_search_path(os.path.join(os.path.dirname(t5.models.__file__), "gin"))
  # gin logs an error for every search-path entry a file is not in before it finds it.
  root_logger = logging.getLogger()
  level = root_logger.level
  root_logger.setLevel(logging.CRITICAL)
  try:
    gin.parse_config_file(pkg_resources.resource_filename(
        "mesh_tensorflow.transformer", "gin/defaults.gin"))
    gin.parse_config_files_and_bindings(list(gin_files), list(bindings))
  finally:
    root_logger.setLevel(level)
