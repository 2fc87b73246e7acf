"""mtf_switch.fused_cross_entropy: Mesh-TF's token loss and its gradient, from one fused op.

The same logits and targets (padding included) go through a real ``Unitransformer``'s stock
``_compute_loss`` and through the fused loss on meshes of virtual CPUs; the loss and its
gradient with respect to the logits must agree, with the z-loss on and off, and the lowered
graph must hold the op each path promises (the fused kernel and no OneHot; the stock OneHot
where the fused path cannot be exact: label smoothing, a vocabulary split over the mesh).
"""

import types

import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import transformer

import mtf_switch
from mesh_harness import run_on_mesh
from mtf_switch import loss as loss_lib

VOCAB, BATCH, LENGTH = 38, 4, 6


def _unitransformer(loss_fn=None, z_loss=1e-4, label_smoothing=0.0, loss_on_targets_only=False):
  return transformer.Unitransformer(
      layer_stack=transformer.LayerStack([]), d_model=8, input_vocab_size=VOCAB,
      output_vocab_size=VOCAB, autoregressive=True, max_length=LENGTH, z_loss=z_loss,
      label_smoothing=label_smoothing, loss_on_targets_only=loss_on_targets_only,
      loss_fn=loss_fn)


def _context(train, layout="", mesh_shape=""):
  return types.SimpleNamespace(
      train=train, activation_dtype=tf.float32, num_microbatches=1,
      model=types.SimpleNamespace(layout=layout, mesh_shape=mesh_shape))


def _data():
  rng = np.random.RandomState(3)
  # Large logits make the z-loss term visible next to the cross-entropy.
  logits = (rng.randn(BATCH, LENGTH, VOCAB) * 4 + 2).astype(np.float32)
  targets = rng.randint(1, VOCAB, size=(BATCH, LENGTH)).astype(np.int32)
  targets[0, 4:] = 0  # padding: no loss, no gradient
  targets[2, 5] = 0
  return logits, targets


def _run(unitransformer, train, layout="", mesh_shape=""):
  logits, targets = _data()
  batch, length = mtf.Dimension("batch", BATCH), mtf.Dimension("length", LENGTH)
  vocab = mtf.Dimension("vocab", VOCAB)

  def build(mesh, inputs):
    del mesh
    loss = unitransformer._compute_loss(
        _context(train, layout, mesh_shape), inputs["logits"], inputs["targets"], vocab)
    return {"loss": loss}

  run = run_on_mesh(build, {"logits": (logits, [batch, length, vocab]),
                            "targets": (targets, [batch, length])},
                    mesh_shape=mesh_shape, layout=layout, grad_of="loss")
  return float(run.outputs["loss"]), run.input_grads["logits"]


def _by_hand(z_loss):
  """The loss and d loss / d logits from the definition, in float64."""
  logits, targets = _data()
  x = logits.astype(np.float64)
  log_z = np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) + x.max(-1)
  picked = np.take_along_axis(x, targets[..., None], -1)[..., 0]
  weights = (targets > 0).astype(np.float64)
  per_token = (log_z - picked) + z_loss * log_z ** 2
  denominator = targets.size  # Mesh-TF's loss_denominator: every position, padding included
  softmax = np.exp(x - log_z[..., None])
  one_hot = np.eye(VOCAB)[targets]
  grad = (softmax * (1 + 2 * z_loss * log_z[..., None]) - one_hot) * weights[..., None]
  return (per_token * weights).sum() / denominator, grad / denominator


@pytest.mark.parametrize("mesh_shape,layout", [
    ("", ""),
    ("batch:2", "batch:batch"),
    ("batch:2;model:2", "batch:batch;length:model"),
])
@pytest.mark.parametrize("train", [True, False])
def test_fused_loss_matches_mesh_tf_and_the_definition(mesh_shape, layout, train):
  fused_loss, fused_grad = _run(
      _unitransformer(loss_fn=mtf_switch.fused_cross_entropy), train, layout, mesh_shape)
  stock_loss, stock_grad = _run(_unitransformer(), train, layout, mesh_shape)
  # The z-loss is a training term, in both paths.
  expected_loss, expected_grad = _by_hand(z_loss=1e-4 if train else 0.0)
  np.testing.assert_allclose(fused_loss, expected_loss, rtol=1e-5)
  np.testing.assert_allclose(fused_loss, stock_loss, rtol=1e-5)
  np.testing.assert_allclose(fused_grad, expected_grad, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(fused_grad, stock_grad, rtol=1e-4, atol=1e-7)
  # Padding positions get no gradient at all.
  assert not fused_grad[0, 4:].any()


def test_z_loss_term_is_counted():
  """The z-loss moves the loss by z * mean(log_z^2): a change the comparison above can see."""
  with_z, _ = _run(_unitransformer(loss_fn=mtf_switch.fused_cross_entropy, z_loss=1e-2), True)
  without_z, _ = _run(_unitransformer(loss_fn=mtf_switch.fused_cross_entropy, z_loss=0.0), True)
  np.testing.assert_allclose(with_z, _by_hand(1e-2)[0], rtol=1e-5)
  np.testing.assert_allclose(without_z, _by_hand(0.0)[0], rtol=1e-5)
  assert with_z - without_z > 0.01


def _lowered_op_types(unitransformer, layout="", mesh_shape=""):
  graph = tf.Graph()
  with graph.as_default():
    mtf_graph = mtf.Graph()
    mesh = mtf.Mesh(mtf_graph, "mesh")
    batch, length = mtf.Dimension("batch", BATCH), mtf.Dimension("length", LENGTH)
    vocab = mtf.Dimension("vocab", VOCAB)
    logits_var = mtf.get_variable(mesh, "logits", [batch, length, vocab])
    targets = mtf.import_tf_tensor(mesh, tf.ones([BATCH, LENGTH], tf.int32), [batch, length])
    loss = unitransformer._compute_loss(_context(True, layout, mesh_shape), logits_var,
                                        targets, vocab)
    grads = mtf.gradients([loss], [logits_var])
    devices = [""] * max(1, mtf.convert_to_shape(mesh_shape).size)
    mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(mesh_shape, layout, devices)
    lowering = mtf.Lowering(mtf_graph, {mesh: mesh_impl})
    lowering.export_to_tf_tensor(grads[0])
    return {op.type for op in graph.get_operations()}


def test_graph_uses_the_fused_kernel():
  types_ = _lowered_op_types(_unitransformer(loss_fn=mtf_switch.fused_cross_entropy))
  assert "SparseSoftmaxCrossEntropyWithLogits" in types_
  assert "OneHot" not in types_


@pytest.mark.parametrize("unitransformer,layout,mesh_shape", [
    (_unitransformer(loss_fn=mtf_switch.fused_cross_entropy, label_smoothing=0.1), "", ""),
    (_unitransformer(loss_fn=mtf_switch.fused_cross_entropy), "vocab:model", "model:2"),
], ids=["label_smoothing", "vocab_split"])
def test_stock_path_where_fusing_is_not_exact(unitransformer, layout, mesh_shape):
  assert not loss_lib.can_fuse(unitransformer, _context(True, layout, mesh_shape),
                               mtf.Dimension("vocab", VOCAB))
  types_ = _lowered_op_types(unitransformer, layout, mesh_shape)
  assert "OneHot" in types_
  assert "SparseSoftmaxCrossEntropyWithLogits" not in types_
  # The fallback leaves the model's own loss_fn in place for the next call.
  assert unitransformer._loss_fn is mtf_switch.fused_cross_entropy


def test_label_smoothing_fallback_matches_stock():
  smoothed = _unitransformer(loss_fn=mtf_switch.fused_cross_entropy, label_smoothing=0.1)
  loss, grad = _run(smoothed, True)
  stock_loss, stock_grad = _run(_unitransformer(label_smoothing=0.1), True)
  assert loss == stock_loss
  np.testing.assert_array_equal(grad, stock_grad)
