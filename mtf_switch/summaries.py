"""Scalar summaries that reach TensorBoard on TPU and on CPU/GPU alike, microbatched or not.

``mtf.scalar_summary`` only records (name, tensor) pairs for a TPU host call, and Mesh-TF's
``tpu_estimator_model_fn`` builds that host call only with ``tpu_summaries=True`` and drops it
when ``use_tpu`` is False, so on CPU the per-layer routing statistics would never be written.
Lowered on a placement mesh (CPU/GPU), these summaries are also emitted as ordinary
``tf.summary.scalar`` ops, which the Estimator's summary hook writes every
``save_summary_steps``. On a TPU mesh they behave exactly like ``mtf.scalar_summary``.

Microbatching. When a step's tokens exceed ``tokens_per_microbatch_per_replica``, Mesh-TF runs
the model once per microbatch inside a while loop (``mtf.serialize_training_step``), and a
summary written inside a TensorFlow while loop cannot be merged with the rest. So the
statistics leave the loop as the loop's own outputs instead: ``install()`` wraps the
``serialize_training_step`` that ``mesh_tensorflow.transformer.utils`` calls, adds every scalar
recorded by the model function as an extra output (which the loop sums over microbatches), and
writes each sum divided by the number of microbatches after the loop. Microbatches hold equal
numbers of tokens, so the value is the step's mean: exact for the load fractions, the dropped
fraction and the losses; for ``expert_load_max``/``min`` it is the mean of the microbatches'
extremes. Scalars recorded in any other while loop (decoding) are skipped, as before. The
command line installs the wrapper (``switch_cli.patches``); importing ``mtf_switch`` does not.
"""

import functools
from typing import List, Optional, Tuple

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

# The prefix of the extra serialize_training_step outputs that carry the recorded scalars.
OUTPUT_PREFIX = "mtf_switch_summary/"

# While the wrapped serialize_training_step builds its model function, scalar_summary appends
# (name, scalar) here instead of creating the summary inside the loop.
_recording: List[List[Tuple[str, mtf.Tensor]]] = []


class _ScalarSummary(mtf.ops.ScalarSummaryOperation):
  """mtf.scalar_summary that also writes a v1 summary when lowered on a placement mesh."""

  def __init__(self, name: str, x: mtf.Tensor):
    super().__init__(name, x)
    self._summary_name = name

  def lower(self, lowering):
    super().lower(lowering)
    # Inside any other while loop (an inference loop, say) a summary cannot be merged with
    # the rest, so there the statistic is skipped rather than breaking the graph. A v1 loop
    # shows as a control-flow context, a v2 loop (TensorFlow 2 behaviour) as a function graph.
    graph = tf.get_default_graph()
    in_loop = (graph._get_control_flow_context() is not None  # noqa: SLF001
               or graph.building_function)
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
  if _recording:
    _recording[-1].append((name, x))
  else:
    _ScalarSummary(name, x)


def serialize_training_step_with_summaries(serialize_training_step):
  """Wraps ``mtf.serialize_training_step`` so that scalar_summary calls reach TensorBoard.

  Same arguments and results as the wrapped function; the results hold no extra outputs.
  """

  @functools.wraps(serialize_training_step)
  def serialize(features, model_fn, batch_dim, num_splits):
    recorded: List[Tuple[str, mtf.Tensor]] = []

    def recording_model_fn(microbatch_features):
      _recording.append([])
      try:
        outputs = dict(model_fn(microbatch_features))
      finally:
        scalars = _recording.pop()
      recorded[:] = scalars
      for name, value in scalars:
        if value.shape.ndims:
          raise ValueError(f"summary {name!r} is not a scalar: shape {value.shape}")
        key = OUTPUT_PREFIX + name
        if key in outputs:
          raise ValueError(f"summary {name!r} was recorded twice in one training step")
        outputs[key] = mtf.cast(value, tf.float32)
      return outputs

    grads, outputs = serialize_training_step(features, recording_model_fn, batch_dim,
                                             num_splits)
    outputs = dict(outputs)
    for name, _ in recorded:
      _ScalarSummary(name, outputs.pop(OUTPUT_PREFIX + name) / float(num_splits))
    return grads, outputs

  serialize.wraps_for_summaries = True
  return serialize


class _MeshTensorflowWithSummaries:
  """Stands in for the ``mesh_tensorflow`` module inside mesh-tensorflow's ``utils``.

  Every attribute is the package's own, except ``serialize_training_step``, wrapped by
  serialize_training_step_with_summaries. The package itself is untouched.
  """

  def __init__(self, module):
    self.wrapped = module
    self.serialize_training_step = serialize_training_step_with_summaries(
        module.serialize_training_step)

  def __getattr__(self, name):
    return getattr(self.wrapped, name)


def install(utils_module: Optional[object] = None) -> bool:
  """Makes Mesh-TF's training model function carry summaries out of its microbatch loop.

  Returns:
    True if this call installed the wrapper, False if it was already installed.
  """
  if utils_module is None:
    from mesh_tensorflow.transformer import utils as utils_module
  if isinstance(utils_module.mtf, _MeshTensorflowWithSummaries):
    return False
  utils_module.mtf = _MeshTensorflowWithSummaries(utils_module.mtf)
  return True
