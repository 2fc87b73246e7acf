"""Records which devices a training run's first step ran on (for the cluster tests).

Imported by the command line (``--module_import=tests.e2e.placement_probe``), it adds a hook to
every ``TPUEstimator.train``: the first training step asks TensorFlow for the partition graphs
it executed (``RunOptions.output_partition_graphs``: one graph per device that ran part of the
step), and the devices of their nodes are written, sorted, as a JSON list to the file
``$PLACEMENT_PROBE_OUT`` names. What was asked for (``utils.run.mesh_devices``) is not what
is recorded: soft placement can move a device's ops elsewhere.
"""

import json
import os

import tensorflow.compat.v1 as tf
from tensorflow_estimator.python.estimator.tpu import tpu_estimator

OUT = os.environ.get("PLACEMENT_PROBE_OUT")
if not OUT:
  raise RuntimeError("tests.e2e.placement_probe: set PLACEMENT_PROBE_OUT to the JSON file to "
                     "write the devices to")


class FirstStepDevices(tf.train.SessionRunHook):
  """Writes the devices the first step's partition graphs ran on to OUT."""

  def __init__(self):
    self.done = False

  def before_run(self, run_context):
    del run_context
    if self.done:
      return None
    return tf.train.SessionRunArgs(
        fetches=None, options=tf.RunOptions(output_partition_graphs=True))

  def after_run(self, run_context, run_values):
    del run_context
    if self.done or not run_values.run_metadata.partition_graphs:
      return
    devices = {node.device for graph in run_values.run_metadata.partition_graphs
               for node in graph.node if node.device}
    with open(OUT, "w") as f:
      json.dump(sorted(devices), f)
    self.done = True


_train = tpu_estimator.TPUEstimator.train


def _train_with_probe(self, input_fn, hooks=None, **kwargs):
  return _train(self, input_fn, hooks=list(hooks or []) + [FirstStepDevices()], **kwargs)


tpu_estimator.TPUEstimator.train = _train_with_probe
