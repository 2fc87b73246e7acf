"""A vocabulary embedding that looks ids up by index on CPU/GPU meshes.

Mesh-TF's ``VocabEmbedding.ids_to_embedding`` is ``mtf.gather``, which Mesh-TF writes as an
einsum of a one-hot [tokens, vocab] tensor with the [vocab, d_model] table: the right choice
for TPU matrix units, but on CPU it is a dense product of tokens x vocab x d_model, forward and
again for the table's gradient. At the project's tiny sizes (8k vocabulary, d_model 128) those
two products were over half of a training step's matmul FLOPs
(``tools/profile_train_step.py``). ``GatherVocabEmbedding`` reads the rows by index instead
(``tf.gather``; its gradient is a segment sum into the table), with the same variable, so
checkpoints are interchangeable with the stock class, and it keeps the one-hot einsum where
that is the better or the only choice: inside a TPU computation, when the layout splits the
vocabulary over a mesh dimension (a slice would need rows held by other devices), and for
model ensembles. ``hidden_to_logits`` (the tied softmax) is a real product and is unchanged.

Bind it for every vocabulary embedding of a model:

    transformer.get_vocab_embedding_cls.cls = @mtf_switch.GatherVocabEmbedding
"""

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import transformer

import gin
from mtf_switch import dispatch


def _is_split(dim: mtf.Dimension, layout, mesh_shape) -> bool:
  rules = mtf.convert_to_layout_rules(layout)
  return rules.tensor_dimension_to_mesh_axis(dim, mtf.convert_to_shape(mesh_shape)) is not None


class _GatherRows(mtf.Operation):
  """[vocab, d] table, [...] int ids -> [..., d] rows; the table's vocab must not be split."""

  def __init__(self, table: mtf.Tensor, ids: mtf.Tensor, name: str = "embedding_gather"):
    super().__init__([table, ids], name=name)
    self._outputs = [mtf.Tensor(self, ids.shape + table.shape.dims[1:], table.dtype)]

  def gradient(self, grad_ys):
    table, ids = self.inputs
    return [_ScatterRowGradients(grad_ys[0], ids, table.shape).outputs[0], None]

  def lower(self, lowering):
    mesh_impl = lowering.mesh_impl(self)
    table, ids = (lowering.tensors[x] for x in self.inputs)
    rows = mesh_impl.slicewise(tf.gather, table, ids)
    lowering.set_tensor_lowering(self.outputs[0], rows)


class _ScatterRowGradients(mtf.Operation):
  """The table's gradient: [..., d] row gradients summed into [vocab, d] by id.

  Each device sums the rows of its own slice of ids; where the ids are split over mesh
  dimensions that the table is not (data parallelism), the partial tables are then summed
  over those dimensions, as Mesh-TF's einsum does for a reduced dimension.
  """

  def __init__(self, row_gradients: mtf.Tensor, ids: mtf.Tensor, table_shape: mtf.Shape):
    super().__init__([row_gradients, ids], name="embedding_gather_grad")
    self._outputs = [mtf.Tensor(self, table_shape, row_gradients.dtype)]

  def lower(self, lowering):
    mesh_impl = lowering.mesh_impl(self)
    row_gradients, ids = (lowering.tensors[x] for x in self.inputs)
    vocab_size = self.outputs[0].shape.dims[0].size
    table_gradient = mesh_impl.slicewise(
        lambda g, i: tf.math.unsorted_segment_sum(g, i, vocab_size), row_gradients, ids)
    reduced_axes = sorted({axis for axis in (mesh_impl.tensor_dimension_to_mesh_axis(d)
                                             for d in self.inputs[1].shape.dims)
                           if axis is not None})
    if reduced_axes:
      table_gradient = mesh_impl.allreduce(table_gradient, reduced_axes, "SUM")
    lowering.set_tensor_lowering(self.outputs[0], table_gradient)


@gin.configurable(module="mtf_switch")
class GatherVocabEmbedding(transformer.VocabEmbedding):
  """``VocabEmbedding`` whose id lookup is an index gather where that is exact and possible.

  Same constructor, variable and outputs as ``mesh_tensorflow.transformer.VocabEmbedding``.
  """

  def can_gather(self, ids: mtf.Tensor, context) -> bool:
    """Whether the lookup can be an index gather (else Mesh-TF's one-hot einsum is used)."""
    if dispatch.building_for_tpu():
      return False
    if self._embedding_weights.shape.ndims != 2:
      return False  # an ensemble dimension: keep the stock path
    model = getattr(context, "model", None)
    layout = getattr(model, "layout", "") or ""
    mesh_shape = getattr(model, "mesh_shape", "") or ""
    return not _is_split(self._vocab_dim, layout, mesh_shape)

  def ids_to_embedding(self, ids: mtf.Tensor, context) -> mtf.Tensor:
    """[batch..., length] int ids -> [batch..., length, d_model] embeddings."""
    if not self.can_gather(ids, context):
      return super().ids_to_embedding(ids, context)
    rows = _GatherRows(self._embedding_weights, mtf.cast(ids, tf.int32)).outputs[0]
    if self._scale_variable_like_classifier_weights:
      rows *= self._output_dim.size ** 0.5
    return rows
