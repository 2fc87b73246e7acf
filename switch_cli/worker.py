"""``python -m switch_cli.worker``: one worker of a ``switch_mesh_transformer`` cluster.

    python -m switch_cli.worker --gin_file=cluster.gin --task=0

reads the same cluster description as the client (``switch_cluster.client``, ``.workers``,
``.devices_per_worker``; see ``switch_cli.cluster``; other bindings in the files are ignored)
and serves ``switch_cluster.workers[task]`` with ``devices_per_worker`` virtual CPU devices
until it is killed. It holds no model and reads no data: the client places slices of the
mesh on its devices and drives them. Prints one line, "switch_cli.worker: task N serving
ADDRESS with D CPU devices", once it listens.
"""

import sys

from absl import app, flags

import gin
from mtf_base import paths
from switch_cli import PreflightError, cluster

# The project's gin/ (as switch_cli.main searches it), so the client's gin paths work here too.
PROJECT_GIN_DIR = paths.gin_dir()
FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "Gin files binding switch_cluster.* (others ignored).")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings, e.g. 'switch_cluster.workers = [...]'.")
flags.DEFINE_integer("task", None, "Which of switch_cluster.workers this process serves.")


def read_cluster(gin_files, gin_params) -> cluster.Cluster:
  """The cluster the gin describes; a PreflightError when it describes none."""
  gin.add_config_file_search_path(PROJECT_GIN_DIR)
  gin.parse_config_files_and_bindings(gin_files, gin_params, skip_unknown=True,
                                      finalize_config=False)
  described = cluster.cluster_from_gin()
  if described is None:
    raise PreflightError("No cluster described: bind switch_cluster.workers and "
                         "switch_cluster.client (--gin_file=cluster.gin or --gin_param).")
  return described


def serve(described: cluster.Cluster, task) -> None:
  """Starts the server of ``workers[task]`` and blocks while it runs."""
  if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < len(
      described.workers):
    raise PreflightError(f"--task={task!r}: the cluster has workers 0 to "
                         f"{len(described.workers) - 1} ({', '.join(described.workers)}).")
  address = described.workers[task]
  if cluster.answers(address, timeout_secs=1.0):
    raise PreflightError(f"{described.describe_worker(task)}: something already listens there "
                         "(a worker still running?).")
  import tensorflow as tf

  server = tf.distribute.Server(tf.train.ClusterSpec(described.cluster_spec()),
                                job_name=cluster.WORKER_JOB, task_index=task,
                                config=cluster.server_config(described.devices_per_worker),
                                start=True)
  print(f"switch_cli.worker: task {task} serving {address} with "
        f"{described.devices_per_worker} CPU devices", flush=True)
  server.join()


def main(argv) -> int:
  del argv
  try:
    serve(read_cluster(FLAGS.gin_file, FLAGS.gin_param), FLAGS.task)
  except PreflightError as e:
    print(f"switch_cli.worker: error: {e}", file=sys.stderr, flush=True)
    return 1
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
