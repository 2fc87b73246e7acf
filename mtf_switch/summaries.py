"""Scalar summaries that reach TensorBoard on TPU and on CPU/GPU alike.

``mtf.scalar_summary`` only records (name, tensor) pairs for a TPU host call, and Mesh-TF's
``tpu_estimator_model_fn`` builds that host call only with ``tpu_summaries=True`` and drops it
when ``use_tpu`` is False, so on CPU the per-layer routing statistics would never be written.
Lowered on a placement mesh (CPU/GPU), these summaries are also emitted as ordinary
``tf.summary.scalar`` ops, which the Estimator's summary hook writes every
``save_summary_steps`` (except inside Mesh-TF's microbatch loop, where TensorFlow cannot merge
them: set ``tokens_per_microbatch_per_replica`` to the whole batch to see them). On a TPU mesh
they behave exactly like ``mtf.scalar_summary``.
"""

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf


class _ScalarSummary(mtf.ops.ScalarSummaryOperation):
  """mtf.scalar_summary that also writes a v1 summary when lowered on a placement mesh."""

  def __init__(self, name: str, x: mtf.Tensor):
    super().__init__(name, x)
    self._summary_name = name

  def lower(self, lowering):
    super().lower(lowering)
    # Inside a while loop (Mesh-TF's microbatching, serialize_training_step) a summary cannot
    # be merged with the rest, so there the statistics are skipped rather than breaking the
    # graph.
    in_loop = tf.get_default_graph()._get_control_flow_context() is not None  # noqa: SLF001
    if (not in_loop and
        isinstance(lowering.mesh_impl(self), mtf.placement_mesh_impl.PlacementMeshImpl)):
      # A scalar is replicated: every device's slice holds the same value.
      value = lowering.tensors[self.inputs[0]].to_laid_out_tensor().tensor_list[0]
      # The raw op keeps the tag exactly as given (tf.summary.scalar would prefix the name
      # scope that lowering runs in, doubling the layer path).
      summary = tf.raw_ops.ScalarSummary(tags=self._summary_name,
                                         values=tf.cast(value, tf.float32))
      tf.add_to_collection(tf.GraphKeys.SUMMARIES, summary)


def scalar_summary(name: str, x: mtf.Tensor) -> None:
  """Records the scalar x under ``name`` for TensorBoard."""
  _ScalarSummary(name, x)
