"""A session's creation over a cluster is bounded (switch_cli.cluster._bounded_session_creation).

TensorFlow creates a distributed session at its first run, when the master asks every worker
for its devices, and waits for a silent worker without limit (operation_timeout_in_ms does not
apply). A child process (so that no waiting thread is left in the test process) starts a
client server whose cluster names a worker where nothing listens, and runs one op there:
bounded, the run fails after connect_timeout_secs with DeadlineExceededError, which
explain_failure turns into an error naming the worker. Unbounded, the child would hang and
the test fails at its own limit.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONNECT_TIMEOUT_SECS = 3
# The child's limit: TensorFlow's import under load and the 3 s bound, not a speed check.
CHILD_TIMEOUT_SECS = 300


def _first_run_with_a_silent_worker() -> dict:
  """In the child: the first run of a session whose cluster has a silent worker."""
  import time

  from mtf_switch import compat  # noqa: F401  (before mesh_tensorflow)

  # isort: split
  import tensorflow.compat.v1 as tf

  from switch_cli import cluster
  from switch_cli.local_cluster import free_ports

  tf.disable_eager_execution()
  client, silent = (f"127.0.0.1:{p}" for p in free_ports(2))
  described = cluster.Cluster(client=client, workers=(silent,), devices_per_worker=1,
                              connect_timeout_secs=CONNECT_TIMEOUT_SECS, step_timeout_secs=60)
  server = cluster.start_client_server(described)
  graph = tf.Graph()
  with graph.as_default(), tf.device("/job:worker/task:0/device:CPU:0"):
    one = tf.constant(1.0) + 1.0
  session = tf.Session(server.target, graph=graph, config=cluster.session_config(described))
  started = time.monotonic()
  with cluster._bounded_session_creation(described):
    try:
      session.run(one)
      return {"error": None}
    except tf.errors.OpError as e:
      return {"error": type(e).__name__, "seconds": time.monotonic() - started,
              "explained": str(cluster.explain_failure(described, e, "/nonexistent")),
              "worker": silent}


@pytest.mark.slow
def test_session_creation_with_a_silent_worker_fails_in_bounded_time():
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  child = subprocess.run([sys.executable, __file__], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=CHILD_TIMEOUT_SECS)
  assert child.returncode == 0, child.stderr[-3000:]
  result = json.loads(child.stdout.strip().splitlines()[-1])
  assert result["error"] == "DeadlineExceededError", result
  assert CONNECT_TIMEOUT_SECS <= result["seconds"] < CONNECT_TIMEOUT_SECS + 30, result
  assert result["explained"].startswith(f"worker task 0 at {result['worker']}: no longer "
                                        "answers"), result
  assert "did not answer in 3 s (switch_cluster.connect_timeout_secs)" in result["explained"]


if __name__ == "__main__":
  print(json.dumps(_first_run_with_a_silent_worker()), flush=True)
  os._exit(0)  # the thread left waiting for the silent worker is not waited for
