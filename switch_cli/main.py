"""``switch_mesh_transformer``: t5's ``t5_mesh_transformer`` made to work and to check its input.

    switch_mesh_transformer --model_dir=/tmp/m --gin_file=models/switch_tiny.gin ...
    python -m switch_cli ...          (the same)

What it adds to t5's command line, whose flags it leaves untouched:
  * the mesh-tensorflow compat repair, before t5 is imported at all (t5 imports
    mesh_tensorflow before it reads ``--module_import``);
  * the project's gin configurables, tasks and gin/ directory (``--gin_file=models/x.gin``);
  * the dtypes the user's gin asks for (``switch_cli.dtypes``): t5 resets them to float32 on
    CPU, silently;
  * the pre-flight checks of ``switch_cli.preflight`` (checkpoint present and of this model,
    vocabulary loads, nothing to train, stale temporary files), before TensorFlow starts;
  * ``infer`` and ``score_*`` modes that decode one checkpoint (default: the latest), write
    UTF-8 text and exit (``switch_cli.infer``);
  * runs over a cluster of ``python -m switch_cli.worker`` processes when
    ``switch_cluster.workers`` is bound (``switch_cli.cluster``, docs/distributed.md);
  * ``mtf_switch.init_seed`` as the graph seed, and the routing statistics out of mesh-tf's
    microbatch loop (``mtf_switch.seeding``, ``mtf_switch.summaries``).
Each of these that replaces a function of mesh-tf or TensorFlow is listed, with why, in
``switch_cli.patches``, whose ``install`` applies them all.
"""

import os
import sys

from mtf_base import compat  # noqa: F401  (must precede every t5 / mesh_tensorflow import)
from mtf_base import paths

PROJECT_GIN_DIR = paths.gin_dir()


def warn_if_protobuf_is_pure_python() -> bool:
  """Says so on stderr when protobuf runs its pure-Python implementation; True if it does.

  Every graph, checkpoint .meta and event a run writes is serialised by protobuf. In pure
  Python (what an environment with protobuf 3.20 on Python 3.11 gets: no compiled module) a
  tiny model's checkpoint save took 7.5 s instead of 0.3 s, and the README's main command
  274 s instead of 224 (quiet machine, 2026-12-02). requirements.txt pins a compiled one.
  """
  from google.protobuf.internal import api_implementation

  if api_implementation.Type() != "python":
    return False
  import google.protobuf

  print(f"switch_mesh_transformer: warning: protobuf {google.protobuf.__version__} runs its "
        "pure-Python implementation, which makes graph building and every checkpoint save "
        "several times slower; install requirements.txt (protobuf 4.25.5, compiled)",
        file=sys.stderr, flush=True)
  return True


def main() -> int:
  warn_if_protobuf_is_pure_python()
  from t5.models import mesh_transformer_main

  import mtf_switch  # noqa: F401  (registers the gin configurables)
  import tasks  # noqa: F401  (registers the project's seqio tasks, mixtures and text_files)

  import gin

  from switch_cli import PreflightError, patches

  # The project's gin/ (models/, mesh/) is searched like t5's own gin directory, so
  # --gin_file=models/switch_tiny.gin works from any directory.
  gin.add_config_file_search_path(PROJECT_GIN_DIR)
  # Every replacement of mesh-tf's and TensorFlow's functions, listed in switch_cli/patches.py.
  patches.install(mesh_transformer_main)
  sys.argv[0] = "t5_mesh_transformer"
  try:
    return _leave_after_cluster_run(mesh_transformer_main.console_entry_point)
  except PreflightError as e:
    print(f"switch_mesh_transformer: error: {e}", file=sys.stderr, flush=True)
    return 1


def _leave_after_cluster_run(entry_point) -> int:
  """Runs the command; after a run over a cluster, ends the process with its exit status
  through os._exit, skipping the interpreter's teardown of the in-process TensorFlow server
  (which can abort a process whose run finished: switch_cli.cluster's client_server_started).
  Without a cluster, the command returns or raises as usual."""
  from switch_cli import PreflightError, cluster

  try:
    status = entry_point()
  except SystemExit as e:
    if not cluster.client_server_started():
      raise
    status = e.code
  except PreflightError as e:  # ClusterError included: the message alone, status 1
    if not cluster.client_server_started():
      raise
    print(f"switch_mesh_transformer: error: {e}", file=sys.stderr, flush=True)
    status = 1
  except BaseException:
    if not cluster.client_server_started():
      raise
    import traceback

    traceback.print_exc()
    status = 1
  if not cluster.client_server_started():
    return status
  if status is not None and not isinstance(status, int):
    print(status, file=sys.stderr)  # sys.exit("message") prints its message, exits 1
    status = 1
  import logging

  sys.stdout.flush()
  sys.stderr.flush()
  logging.shutdown()
  os._exit(status or 0)


if __name__ == "__main__":
  sys.exit(main())
