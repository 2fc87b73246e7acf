"""The experts' FFN computed on the filled capacity slots only (the gather path on CPU/GPU).

``experts.expert_ffn`` runs Mesh-TF einsums over every capacity slot, filled or not, in any
layout. Routing fills each (expert, group)'s slots from slot 0 up, so the filled rows are a
known prefix; ``packed_expert_ffn`` packs them into one [filled, d_model] matrix, lets each
expert multiply its own run of rows, and scatters the results back (empty slots are zero, as
they are in ``expert_ffn``: no biases, and every activation maps 0 to 0). At capacity factor
1.25 this skips the 20% of expert FLOPs that the static shapes spend on empty slots.

It creates the same variables as ``expert_ffn`` (wi or wi_0/wi_1, wo), so checkpoints move
freely between the two. The row count is dynamic, so it needs a placement mesh (CPU/GPU, not
TPU), and each device must hold whole d_model and expert_hidden rows (experts and groups may
be split).
"""

import math

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

from mtf_switch.dispatch import materialized
from mtf_switch.experts import ACTIVATIONS, HIDDEN_DIM_NAME, check_activation


def _gelu(x):
  """mtf.gelu's formula (the tanh approximation), so both paths compute the same values."""
  cdf = 0.5 * (1.0 + tf.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))
  return x * cdf


# The TensorFlow twins of the Mesh-TF activations in experts.ACTIVATIONS.
_TF_ACTIVATIONS = {
    "relu": tf.nn.relu,
    "gelu": _gelu,
    "swish": lambda x: x * tf.sigmoid(x),  # mtf.swish
    "linear": tf.identity,
}


def _wi_names(activation: str):
  """Variable scopes mtf.layers.dense_product gives the input projections."""
  count = len(ACTIVATIONS[activation])
  return ["wi"] if count == 1 else [f"wi_{i}" for i in range(count)]


def _packed_slot_ffn(slots, counts, *kernels, activations, dropout_rate, train):
  """tf slice function: the FFN of each expert on its filled slots only.

  Args:
    slots: [e, g, c, d] slot contents.
    counts: [e, g] float32 filled slots (a prefix of c) per expert and group.
    kernels: wi kernels [e, d, h] (one per activation factor), then wo [e, h, d].
    activations: the ACTIVATIONS entry.
    dropout_rate, train: expert dropout on the hidden layer.

  Returns:
    [e, g, c, d], zero in empty slots.
  """
  num_experts, num_groups, capacity, d_model = (slots.shape[i] for i in range(4))
  counts = tf.cast(counts, tf.int32)
  filled = tf.sequence_mask(counts, capacity)  # [e, g, c]
  rows = tf.where(tf.reshape(filled, [-1]))  # [n, 1] int64, ordered by expert
  packed = tf.gather_nd(tf.reshape(slots, [-1, d_model]), rows)
  rows_per_expert = tf.reduce_sum(counts, axis=1)
  pieces = tf.split(packed, rows_per_expert, num=num_experts)
  # Unstacked once: indexing kernel[e] per expert would make each slice's gradient a full
  # [e, d, h] tensor of zeros (experts x the weights in memory); unstack's gradient is one stack.
  per_expert = [tf.unstack(kernel, num=num_experts) for kernel in kernels]
  *wi_kernels, wo_kernels = per_expert
  outputs = []
  for expert, piece in enumerate(pieces):
    hidden = None
    for name, kernel in zip(activations, wi_kernels, strict=True):
      factor = _TF_ACTIVATIONS[name](tf.matmul(piece, kernel[expert]))
      hidden = factor if hidden is None else hidden * factor
    if train and dropout_rate > 0.0:
      hidden = tf.nn.dropout(hidden, rate=dropout_rate)
    outputs.append(tf.matmul(hidden, wo_kernels[expert]))
  packed_out = tf.concat(outputs, axis=0)
  num_rows = num_experts * num_groups * capacity
  unpacked = tf.scatter_nd(rows, packed_out, [num_rows, d_model])
  return tf.reshape(unpacked, [num_experts, num_groups, capacity, d_model])


def packed_expert_ffn(expert_inputs: mtf.Tensor, filled_slots: mtf.Tensor,
                      experts_dim: mtf.Dimension, hidden_size: int, activation: str,
                      dropout_rate: float, train: bool, variable_dtype: mtf.VariableDType,
                      init_scale: float) -> mtf.Tensor:
  """``experts.expert_ffn`` computed on the filled slots only (see the module docstring).

  Args:
    expert_inputs: [experts, groups, expert_capacity, d_model]; the slots of each (expert,
      group) beyond its filled count must be zero (as both dispatch paths leave them).
    filled_slots: [experts, groups] float32 filled-slot counts, laid out like expert_inputs.
    Other arguments as ``expert_ffn``.

  Returns:
    [experts, groups, expert_capacity, d_model]; equal to ``expert_ffn`` (whose empty slots
    are zero too: no biases, and every activation maps 0 to 0).
  """
  check_activation(activation)
  _, groups_dim, _, model_dim = expert_inputs.shape.dims
  hidden_dim = mtf.Dimension(HIDDEN_DIM_NAME, hidden_size)
  initializer = mtf.layers.VarianceScalingInitializer(scale=init_scale)
  kernels = [
      mtf.layers.get_dense_kernel_weights(
          expert_inputs, [hidden_dim], [model_dim], [experts_dim], initializer, name=name,
          variable_dtype=variable_dtype)
      for name in _wi_names(activation)]
  # The kernel helper reads only the mesh and the dtype of its first argument.
  kernels.append(mtf.layers.get_dense_kernel_weights(
      expert_inputs, [model_dim], [hidden_dim], [experts_dim], initializer, name="wo",
      variable_dtype=variable_dtype))

  def slice_fn(slots, counts, *kernel_slices):
    return _packed_slot_ffn(slots, counts, *kernel_slices, activations=ACTIVATIONS[activation],
                            dropout_rate=dropout_rate, train=train)

  # The kernels too go through an identity of their own: Mesh-TF's autostack makes the
  # kernels of all layers of one shape outputs of a single unstack op, and tf.gradients, which
  # the slicewise op's gradient calls, works by op: from that shared op it would build (dead)
  # gradient ops back through every earlier layer, a graph that grows with depth squared.
  return materialized(mtf.slicewise(
      slice_fn, [materialized(t) for t in [expert_inputs, filled_slots, *kernels]],
      output_shape=expert_inputs.shape, output_dtype=expert_inputs.dtype,
      splittable_dims=[experts_dim, groups_dim], name="packed_expert_ffn"))
