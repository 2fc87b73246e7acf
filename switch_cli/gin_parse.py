"""mesh-tf's ``parse_gin_defaults_and_flags``, which t5's main calls, with the project's steps.

The same three steps (gin search paths, mesh-tf's ``defaults.gin``, the user's ``--gin_file`` and
``--gin_param``), plus: on CPU, the CPU dtype defaults bound between defaults.gin and the user's
files (``switch_cli.dtypes``); then, once the user's gin is parsed and before t5 reads it, the
dtype request recorded and the ``after_parse`` steps run (the ``text_files`` task registered,
the task name checked), so their errors come before t5 looks the task up.
"""

from typing import Callable, Sequence

import gin
from switch_cli import dtypes


def install(mesh_transformer_main, after_parse: Sequence[Callable[[], object]] = (),
            ) -> dtypes.RequestedDtypes:
  """Replaces the parse step t5's main calls; returns the dtype request it will record."""
  utils = mesh_transformer_main.utils
  flags = mesh_transformer_main.FLAGS
  requested = dtypes.RequestedDtypes()

  def parse_gin_defaults_and_flags(skip_unknown=False, finalize_config=True):
    on_cpu = not flags.tpu
    for path in flags.gin_location_prefix:
      gin.add_config_file_search_path(path)
    gin.parse_config_file(utils.pkg_resources.resource_filename(
        utils.__name__, utils._DEFAULT_CONFIG_FILE), skip_unknown=skip_unknown)
    if on_cpu:
      for name, value in dtypes.CPU_DEFAULTS.items():
        gin.bind_parameter(name, value)
    gin.parse_config_files_and_bindings(flags.gin_file, flags.gin_param,
                                        skip_unknown=skip_unknown, finalize_config=False)
    dtypes.record_request(requested, utils.get_variable_dtype, on_cpu)
    for step in after_parse:
      step()
    if finalize_config:
      gin.finalize()

  utils.parse_gin_defaults_and_flags = parse_gin_defaults_and_flags
  return requested
