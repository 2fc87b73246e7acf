"""The Switch layer's routing statistics reach TensorBoard when Mesh-TF microbatches a step.

Mesh-TF runs a microbatched training step inside a while loop (``serialize_training_step``),
where a summary cannot be written; ``mtf_switch.summaries`` carries the scalars out as loop
outputs and writes their mean over microbatches. These tests compare that mean with the
statistics of the same layer run on each microbatch alone.
"""

import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import utils as mtf_utils

from mtf_switch import layers, summaries
from tests.mesh_harness import run_on_mesh

F32 = mtf.VariableDType(tf.float32, tf.float32, tf.float32)
BATCH, LENGTH, D_MODEL, EXPERTS = 4, 8, 6, 4


def _dims(batch):
  return [mtf.Dimension("batch", batch), mtf.Dimension("length", LENGTH),
          mtf.Dimension("d_model", D_MODEL)]


def _layer():
  # Capacity 1.0 with groups of 8 tokens over 4 experts: 2 slots per expert, so the random
  # router below drops tokens and the dropped fraction is not trivially zero.
  return layers.SwitchFFN(num_experts=EXPERTS, hidden_size=5, group_size=8,
                          capacity_factor_train=1.0, min_expert_capacity=1,
                          router_policy_train="argmax")


def _weights(rng):
  return {"router/kernel": 3.0 * rng.randn(D_MODEL, EXPERTS),
          "wi/kernel": rng.randn(EXPERTS, D_MODEL, 5), "wo/kernel": rng.randn(EXPERTS, 5, D_MODEL)}


def _training_loss(layer, x):
  out = layer.apply(x, train=True, variable_dtype=F32)
  return mtf.reduce_sum(out.outputs) + mtf.reduce_sum(out.aux_loss)


def _microbatched(x, weights, num_microbatches, serialize):
  layer = _layer()

  def build(mesh, inputs):
    def model_fn(features):
      return {"loss": _training_loss(layer, features["x"])}

    _, outputs = serialize({"x": inputs["x"]}, model_fn, inputs["x"].shape.dims[0],
                           num_microbatches)
    return {"loss": outputs["loss"]}

  return run_on_mesh(build, {"x": (x, _dims(BATCH))}, weights=weights)


def _alone(x, weights):
  layer = _layer()
  return run_on_mesh(lambda mesh, inputs: {"loss": _training_loss(layer, inputs["x"])},
                     {"x": (x, _dims(x.shape[0]))}, weights=weights)


@pytest.fixture(autouse=True, scope="module")
def installed():
  """The wrapper as the command line installs it (switch_cli.patches); importing mtf_switch
  alone does not, which tests/test_compat_and_cli.py checks in a fresh process."""
  summaries.install()


def test_install_wraps_serialize_training_step_once():
  assert getattr(mtf_utils.mtf.serialize_training_step, "wraps_for_summaries", False)
  assert summaries.install() is False
  assert not isinstance(mtf_utils.mtf.wrapped, type(mtf_utils.mtf))
  # Everything else is the package's own.
  assert mtf_utils.mtf.Dimension is mtf.Dimension


def test_microbatched_statistics_are_the_mean_of_each_microbatch_alone():
  rng = np.random.RandomState(4)
  x = rng.randn(BATCH, LENGTH, D_MODEL).astype(np.float32)
  weights = _weights(rng)
  looped = _microbatched(x, weights, 2, mtf_utils.mtf.serialize_training_step)
  # serialize_training_step splits the batch into strided microbatches: rows 0, 2 and 1, 3.
  first, second = _alone(x[0::2], weights), _alone(x[1::2], weights)

  prefix = "moe/"
  tags = sorted(t for t in first.summaries if t.startswith(prefix))
  assert len(tags) == EXPERTS + 7, tags
  assert sorted(t for t in looped.summaries if t.startswith(prefix)) == tags
  for tag in tags:
    expected = (first.summaries[tag] + second.summaries[tag]) / 2
    assert looped.summaries[tag] == pytest.approx(expected, rel=1e-5, abs=1e-6), tag
  # Numbers a broken run would change: loads average to 1 (perfect balance is 1.0 for each
  # expert), the dropped fraction is a fraction, and the two microbatches differ.
  loads = [looped.summaries[t] for t in tags if "/expert_load/" in t]
  assert np.mean(loads) == pytest.approx(1.0, rel=1e-5)
  dropped = [t for t in tags if t.endswith("dropped_fraction")][0]
  assert 0.0 < looped.summaries[dropped] < 1.0
  assert first.summaries[dropped] != second.summaries[dropped]
  # The loss itself is unchanged by the extra outputs.
  np.testing.assert_allclose(looped.outputs["loss"],
                             first.outputs["loss"] + second.outputs["loss"], rtol=1e-5)


def test_mesh_tensorflows_own_loop_writes_no_statistics():
  # Without the wrapper the scalars are skipped inside the loop: the reason for the wrapper.
  rng = np.random.RandomState(4)
  x = rng.randn(BATCH, LENGTH, D_MODEL).astype(np.float32)
  raw = mtf_utils.mtf.wrapped.serialize_training_step
  looped = _microbatched(x, _weights(rng), 2, raw)
  assert not [t for t in looped.summaries if t.startswith("moe/")]
