"""GatherVocabEmbedding: the same embeddings and table gradients as Mesh-TF's one-hot lookup.

Both classes are built with the same table on a mesh of virtual CPUs; the looked-up rows and
the gradient of a weighted sum with respect to the table must agree (the forward exactly: a
row copy and a one-hot product with one nonzero term are the same number), and the graph must
hold the op each path promises: a gather and no OneHot for the index path, OneHot for the
fallbacks (vocabulary split over the mesh, inside a TPU computation).
"""

import types

import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import transformer

from mesh_harness import run_on_mesh
from mtf_switch import embedding

VOCAB, D_MODEL, BATCH, LENGTH = 50, 8, 4, 6
F32 = mtf.VariableDType(tf.float32)


def _context(layout, mesh_shape):
  return types.SimpleNamespace(model=types.SimpleNamespace(layout=layout, mesh_shape=mesh_shape))


def _run(cls, layout, mesh_shape, record_ops=None):
  rng = np.random.RandomState(0)
  ids = rng.randint(0, VOCAB, size=(BATCH, LENGTH)).astype(np.int32)
  ids[0, :3] = [0, VOCAB - 1, 0]  # the first and last row, and a repeated id
  probe = rng.randn(BATCH, LENGTH, D_MODEL).astype(np.float32)
  table = rng.randn(VOCAB, D_MODEL).astype(np.float32)
  batch, length = mtf.Dimension("batch", BATCH), mtf.Dimension("length", LENGTH)
  vocab, model = mtf.Dimension("vocab", VOCAB), mtf.Dimension("d_model", D_MODEL)

  def build(mesh, inputs):
    layer = cls(mesh, vocab, model, F32, name="shared", ensemble_dim=None)
    rows = layer.ids_to_embedding(inputs["ids"], _context(layout, mesh_shape))
    if record_ops is not None:
      record_ops.append(layer)
    return {"rows": rows, "loss": mtf.reduce_sum(rows * inputs["probe"])}

  run = run_on_mesh(build, {"ids": (ids, [batch, length]),
                            "probe": (probe, [batch, length, model])},
                    mesh_shape=mesh_shape, layout=layout,
                    weights={"shared": table}, grad_of="loss")
  (grad,) = run.variable_grads.values()
  return run.outputs["rows"], grad, table, ids, probe


@pytest.mark.parametrize("mesh_shape,layout", [
    ("", ""),
    ("batch:2", "batch:batch"),
    ("batch:2;model:2", "batch:batch;d_model:model"),
])
def test_gather_lookup_matches_one_hot_lookup(mesh_shape, layout):
  rows, grad, table, ids, probe = _run(embedding.GatherVocabEmbedding, layout, mesh_shape)
  stock_rows, stock_grad, *_ = _run(transformer.VocabEmbedding, layout, mesh_shape)
  np.testing.assert_array_equal(rows, table[ids])
  np.testing.assert_array_equal(rows, stock_rows)
  # d loss / d table[v] = sum of probe over the positions holding id v.
  expected = np.zeros_like(table)
  np.add.at(expected, ids.reshape(-1), probe.reshape(-1, D_MODEL))
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grad, stock_grad, rtol=1e-5, atol=1e-5)


def _lowered_op_types(layout, mesh_shape, in_tpu_context=False):
  """Op types of the lowered lookup graph (forward and table gradient)."""
  batch, length = mtf.Dimension("batch", BATCH), mtf.Dimension("length", LENGTH)
  vocab, model = mtf.Dimension("vocab", VOCAB), mtf.Dimension("d_model", D_MODEL)
  graph = tf.Graph()
  with graph.as_default():
    mtf_graph = mtf.Graph()
    mesh = mtf.Mesh(mtf_graph, "mesh")
    ids = mtf.import_tf_tensor(mesh, tf.zeros([BATCH, LENGTH], tf.int32), [batch, length])
    layer = embedding.GatherVocabEmbedding(mesh, vocab, model, F32, name="shared",
                                           ensemble_dim=None)
    original = embedding.dispatch.building_for_tpu
    if in_tpu_context:
      embedding.dispatch.building_for_tpu = lambda: True
    try:
      rows = layer.ids_to_embedding(ids, _context(layout, mesh_shape))
    finally:
      embedding.dispatch.building_for_tpu = original
    loss = mtf.reduce_sum(rows)
    [table_grad] = mtf.gradients([loss], [mtf_graph.trainable_variables[0].outputs[0]])
    shape = mtf.convert_to_shape(mesh_shape)
    devices = ["/cpu:%d" % i for i in range(max(1, shape.size))]
    lowering = mtf.Lowering(mtf_graph, {mesh: mtf.placement_mesh_impl.PlacementMeshImpl(
        shape, layout, devices)})
    lowering.export_to_tf_tensor(rows)
    lowering.export_to_tf_tensor(table_grad)
  return {op.type for op in graph.get_operations()}


def test_index_path_builds_no_one_hot():
  types_ = _lowered_op_types("batch:batch", "batch:2")
  assert types_ & {"GatherV2", "ResourceGather"}
  assert "UnsortedSegmentSum" in types_  # the table's gradient
  assert "OneHot" not in types_


@pytest.mark.parametrize("layout,mesh_shape,in_tpu", [
    ("batch:batch;vocab:model", "batch:1;model:2", False),   # rows held by other devices
    ("batch:batch", "batch:2", True),                         # TPU: the one-hot einsum
])
def test_falls_back_to_one_hot_einsum(layout, mesh_shape, in_tpu):
  types_ = _lowered_op_types(layout, mesh_shape, in_tpu_context=in_tpu)
  assert "OneHot" in types_
  assert not types_ & {"GatherV2", "ResourceGather"}


def test_vocabulary_split_over_mesh_still_matches():
  rows, grad, table, ids, _ = _run(embedding.GatherVocabEmbedding, "vocab:model", "model:2")
  np.testing.assert_array_equal(rows, table[ids])
