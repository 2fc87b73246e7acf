"""The experts' FFN as TensorFlow slice functions: on the filled capacity slots only, or on
every slot as batched matmuls (placement meshes on CPU/GPU).

``experts.expert_ffn`` runs Mesh-TF einsums over every capacity slot, filled or not, in any
layout. Routing fills each (expert, group)'s slots from slot 0 up, so the filled rows are a
known prefix; ``packed_expert_ffn`` packs them into one [filled, d_model] matrix, lets each
expert multiply its own run of rows, and writes the results back to their slots (empty slots
are zero, as they are in ``expert_ffn``: no biases, and every activation maps 0 to 0). At
capacity factor 1.25 this skips the 20% of expert FLOPs that the static shapes spend on empty slots.

Its gradient is written out (``_packed_slot_ffn``) for speed: TensorFlow's own would multiply
each expert's output gradient by its transposed weights in a form the CPU kernels run at a fifth
of the forward's speed when an expert has few rows (``tools/bench_dispatch.py --profile``).

It creates the same variables as ``expert_ffn`` (wi or wi_0/wi_1, wo), so checkpoints move
freely between the two. The row count is dynamic, so it needs a placement mesh (CPU/GPU, not
TPU), and each device must hold whole d_model and expert_hidden rows (experts and groups may
be split).

``batched_expert_ffn`` is ``expert_ffn`` on every slot, static shapes and TensorFlow's own
gradient, with each device's [experts, groups, capacity, d_model] slots taken as [experts,
groups x capacity, d_model] rows: Mesh-TF's einsums contract the groups and capacity axes
together in the weight gradients, which the CPU einsum kernel runs by transposing its
operands; a batched matmul takes the merged rows axis as it is.
"""

import dataclasses
import math

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

from mtf_switch import cpu_gemm
from mtf_switch.dispatch import device_local_gradient, materialized
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


# skip_empty_slots="auto" packs the experts when one expert weight matrix (d_model x d_ff)
# holds at least this many elements. Below it the packed FFN's per-expert ops (split, two
# matmuls, activation, a written-out gradient, scatter) cost more than the FLOPs of the empty
# slots it skips, and one Mesh-TF einsum over every slot is faster. Measured, quiet 2-core
# machine: switch_tiny through the CLI (d_model 128, d_ff 512: 2^16 elements, 8 experts)
# trained faster on every slot in three of four paired rounds (1.38x, 1.12x, 1.16x, 0.89x;
# tools/bench_cli_training.py, one process per variant and round); bench_dispatch.py at d_model 512,
# d_ff 2048 (2^20) was 1.39x faster packed at 32 experts and 2.06x at 128. 2^18 lies between
# the two measured sizes; no size in between was measured.
PACKED_MIN_WEIGHT_ELEMENTS = 1 << 18
# The same threshold where the graph is built for oneDNN's AVX2 sgemm (cpu_gemm), whose tuned
# products make packing pay sooner: switch_tiny (2^16) trained 1.04x faster packed than on
# every slot, in two quiet runs on such a machine (tools/bench_cli_training.py --models switch
# --variants default,packed, 3 and 6 rounds; of the 6 paired rounds packed was faster in 4,
# level in 1, slower in 1).
# Smaller experts were not measured.
PACKED_MIN_WEIGHT_ELEMENTS_AVX2_SGEMM = 1 << 16


def packing_pays(d_model: int, hidden_size: int) -> bool:
  """Whether skip_empty_slots="auto" packs experts of this size: PACKED_MIN_WEIGHT_ELEMENTS, or
  PACKED_MIN_WEIGHT_ELEMENTS_AVX2_SGEMM where the graph is built for oneDNN's AVX2 sgemm."""
  threshold = (PACKED_MIN_WEIGHT_ELEMENTS_AVX2_SGEMM if cpu_gemm.onednn_avx2_sgemm()
               else PACKED_MIN_WEIGHT_ELEMENTS)
  return d_model * hidden_size >= threshold


# The backward: up to this many capacity slots per expert (groups x capacity, in one slice),
# every product is one batched matmul over all slots; beyond it, one matmul per expert on its
# filled rows, the weight gradients stacked. The batched form multiplies the empty slots too
# (a quarter more backward FLOPs at capacity factor 1.25), the per-expert one runs many small
# matmuls and copies every weight gradient once (tf.stack). bench_dispatch.py, quiet 2-core
# machine, d_model 512, d_ff 2048, weight gradients alone: at 80 slots per expert (128
# experts, 8192 tokens) batched was 7-9% faster and held 730 MB of working memory instead of
# 2080; at 320 (32 experts) 8-13% slower. Input gradients batched too, at 80 slots: the step
# 1-4% faster in two paired runs (1.49 -> 1.47, 1.46 -> 1.43 x dense), with 151 backward ops
# instead of 663 (tools/bench_expert_matmuls.py, the two input gradients: 67 and 65 ms batched
# against 66 and 73 per expert). Built for oneDNN's AVX2 sgemm (cpu_gemm), the input gradients
# run per expert in the direct form even here: tools/bench_expert_matmuls.py, 128 experts,
# 122 and 119 ms per expert against 142 and 140 batched; the layer 1.46 -> 1.38x dense
# (bench_dispatch.py --quick --rounds 7, quiet). 160 is between.
BATCHED_BACKWARD_MAX_SLOTS = 160


def _wi_names(activation: str):
  """Variable scopes mtf.layers.dense_product gives the input projections."""
  count = len(ACTIVATIONS[activation])
  return ["wi"] if count == 1 else [f"wi_{i}" for i in range(count)]


# Input gradients a . b^T with b an expert's weight matrix [n, k]: up to this many bytes of
# b, one matmul with transpose_b; above, (b . a^T)^T. The second form keeps the CPU kernels
# from packing a large transposed right operand, but pays a transpose of its [n, m] result.
# Measured under load (paired ratios to dense, bench_dispatch.py and profile_train_step.py):
# 4 MiB weights (d_model 512, d_ff 2048): the transposed form 1.45-1.49x dense at 128 experts,
# the direct 1.83-1.87x; 256 KiB weights (switch_tiny, d_model 128, d_ff 512): the transposes
# were 24% of the Switch layers' op time, the direct form cut that op time by 17%. Where
# oneDNN's AVX2 sgemm runs the products (cpu_gemm.direct_transposed_products) every size takes
# the direct form: quiet A/B on such a machine, 4 MiB weights, 32 experts 1.16 -> 1.15 and
# 1.17 -> 1.12x dense, 128 experts 1.47 -> 1.48 (an A/B over bench_dispatch.Step; its
# gather_untuned variant turns the whole tuning off).
TRANSPOSED_PRODUCT_MIN_WEIGHT_BYTES = 1 << 20


def _transposed_product(a, b):
  """a . b^T for a small a [..., m, k] and weight matrices b [..., n, k], in the faster form.

  Both forms give the numbers of tf.matmul(a, b, transpose_b=True); leading axes (the
  experts, in the slot layout) are a batch, and the size rule reads one matrix b[..., :, :].
  For a large b the product is computed as (b . a^T)^T: TensorFlow's CPU kernels pack a
  transposed right operand row by row, and here that operand is an expert's whole weight
  matrix against a few dozen rows of a (bench_dispatch.py --profile: 9 GFLOP/s against 45 at
  128 experts, oneDNN off). oneDNN's AVX2 sgemm runs the direct form as fast
  (``cpu_gemm``), so there every b takes it.
  """
  weight_bytes = b.shape[-2:].num_elements() * b.dtype.size
  if (weight_bytes < TRANSPOSED_PRODUCT_MIN_WEIGHT_BYTES
      or cpu_gemm.direct_transposed_products()):
    return tf.matmul(a, b, transpose_b=True)
  return tf.linalg.matrix_transpose(tf.matmul(b, a, transpose_b=True))


@dataclasses.dataclass(frozen=True)
class _SlotLayout:
  """Where the filled slots of an [e, g, c, ...] tensor are, and how packed rows go back.

  rows: [n, 1] int64, the flat slot index of each filled slot, ordered by expert.
  rows_per_expert: [e] int32, filled slots per expert (over its groups).
  empty_rows: [e*g*c - n] int32, the flat indices of the empty slots.
  stitch_indices: each expert's rows (int32, the index type tf.dynamic_stitch takes), then
    empty_rows: where each piece, and then the zero rows, go in the slot layout.
  """
  num_experts: int
  num_groups: int
  capacity: int
  rows: tf.Tensor
  rows_per_expert: tf.Tensor
  empty_rows: tf.Tensor
  stitch_indices: list

  @property
  def slots_per_expert(self) -> int:
    return self.num_groups * self.capacity

  def per_expert(self, packed):
    """[n, k] packed rows -> one [rows of expert i, k] piece per expert."""
    return tf.split(packed, self.rows_per_expert, num=self.num_experts)

  def gather(self, tensor, width):
    """[e, g, c, width] -> one [rows of expert i, width] piece per expert, filled slots only."""
    return self.per_expert(tf.gather_nd(tf.reshape(tensor, [-1, width]), self.rows))

  def to_slots(self, pieces, width):
    """One [rows of expert i, width] piece per expert -> [e, g, c, width], empty slots 0.

    One tf.dynamic_stitch writes every piece to its slots: tf.scatter_nd would need the
    pieces concatenated first, a copy of every row (bench_dispatch.py, 128 experts: the
    step 4-5% faster, 1.52 -> 1.48 and 1.53 -> 1.51 x dense in two paired runs).
    """
    zeros = tf.zeros(tf.stack([tf.size(self.empty_rows), width]), pieces[0].dtype)
    return tf.reshape(tf.dynamic_stitch(self.stitch_indices, list(pieces) + [zeros]),
                      [self.num_experts, self.num_groups, self.capacity, width])

  def by_slot(self, tensor, width):
    """[e, g, c, width] (or [e*g*c, width]) -> [e, g*c, width]."""
    return tf.reshape(tensor, [self.num_experts, self.slots_per_expert, width])


def _slot_layout(counts, num_experts: int, num_groups: int, capacity: int) -> _SlotLayout:
  """The _SlotLayout of [e, g] filled-slot counts (each a prefix of the c slots)."""
  counts = tf.cast(counts, tf.int32)
  filled = tf.sequence_mask(counts, capacity)  # [e, g, c]
  flat_filled = tf.reshape(filled, [-1])
  rows = tf.where(flat_filled)  # [n, 1] int64, ordered by expert
  rows_per_expert = tf.reduce_sum(counts, axis=1)
  empty_rows = tf.cast(tf.where(tf.logical_not(flat_filled))[:, 0], tf.int32)
  stitch_indices = (tf.split(tf.cast(rows[:, 0], tf.int32), rows_per_expert, num=num_experts)
                    + [empty_rows])
  return _SlotLayout(num_experts, num_groups, capacity, rows, rows_per_expert, empty_rows,
                     stitch_indices)


@dataclasses.dataclass(frozen=True)
class _ExpertForward:
  """The forward pass per expert on its packed rows, kept for the gradient.

  inputs: per expert [rows, d]. wi_kernels: per wi kernel, per expert [d, h]. wo_kernels:
  per expert [h, d]. pre_activations: per expert, one [rows, h] per wi kernel. hiddens: per
  expert [rows, h], after the activations, gating and dropout. outputs: per expert [rows, d].
  """
  inputs: list
  wi_kernels: list
  wo_kernels: list
  pre_activations: list
  hiddens: list
  outputs: list


def _hidden_layer(pre_activations, activations, dropout_rate, train):
  """The FFN's hidden layer from its pre-activations [..., h] (one per wi kernel).

  The product of each factor's activation (one factor: plain; two: gated, as GEGLU), then
  expert dropout while training.
  """
  hidden = None
  for name, pre in zip(activations, pre_activations, strict=True):
    factor = _TF_ACTIVATIONS[name](pre)
    hidden = factor if hidden is None else hidden * factor
  if train and dropout_rate > 0.0:
    hidden = tf.nn.dropout(hidden, rate=dropout_rate)
  return hidden


def _forward_kernels(kernel, unstacked, rows: float):
  """Per expert, the weight matrix the forward multiplies ``rows`` rows by: ``unstacked``
  (kernel [e, k, n] unstacked) itself, or, where ``cpu_gemm.forward_padding`` says the
  product runs faster so, a copy with zero columns appended ([k, n + pad]; one tf.pad of the
  whole kernel)."""
  pad = cpu_gemm.forward_padding(rows, int(kernel.shape[-1]), kernel.dtype.size)
  if not pad:
    return unstacked
  return tf.unstack(tf.pad(kernel, [[0, 0], [0, 0], [0, pad]]), num=kernel.shape[0])


def _times(rows, weight, width: int):
  """rows [m, k] x weight [k, width] or its padded copy [k, width + pad] -> [m, width]."""
  product = tf.matmul(rows, weight)
  return product if int(weight.shape[-1]) == width else product[:, :width]


def _expert_forward(layout: _SlotLayout, slots, kernels, activations, dropout_rate, train,
                    expected_fill: float) -> _ExpertForward:
  """Each expert's FFN on its own filled rows of slots [e, g, c, d].

  expected_fill: the fraction of its slots an expert fills under balanced routing, which
  sizes the products for ``cpu_gemm.forward_padding``.
  """
  inputs = layout.gather(slots, slots.shape[3])
  # Unstacked once: indexing kernel[e] per expert would make each slice's gradient a full
  # [e, d, h] tensor of zeros; unstack (axis 0) shares the kernel's buffer.
  unstacked = [tf.unstack(kernel, num=layout.num_experts) for kernel in kernels]
  *wi_kernels, wo_kernels = unstacked
  # int(): under TensorFlow's v1 shapes (as the command line runs) a size is a Dimension.
  rows = int(layout.slots_per_expert) * expected_fill
  *wi_forward, wo_forward = [_forward_kernels(kernel, per_expert, rows)
                             for kernel, per_expert in zip(kernels, unstacked, strict=True)]
  hidden_width, d_model = int(kernels[-1].shape[1]), int(kernels[-1].shape[2])
  pre_activations, hiddens, outputs = [], [], []
  for expert, piece in enumerate(inputs):
    pres = [_times(piece, kernel[expert], hidden_width) for kernel in wi_forward]
    hidden = _hidden_layer(pres, activations, dropout_rate, train)
    pre_activations.append(pres)
    hiddens.append(hidden)
    outputs.append(_times(hidden, wo_forward[expert], d_model))
  return _ExpertForward(inputs, wi_kernels, wo_kernels, pre_activations, hiddens, outputs)


def _elementwise_gradient(forward: _ExpertForward, d_hiddens):
  """Per expert, the gradients of its pre-activations (one per wi kernel).

  One tf.gradients call over every expert's packed rows differentiates the activations,
  gating and dropout (the forward's own mask).
  """
  flat_pres = [pre for pres in forward.pre_activations for pre in pres]
  d_flat_pres = tf.gradients(forward.hiddens, flat_pres, grad_ys=d_hiddens,
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)
  factors = len(forward.wi_kernels)
  return [d_flat_pres[i * factors:(i + 1) * factors] for i in range(len(forward.hiddens))]


def _per_expert_input_gradients(layout: _SlotLayout, d_model: int, forward: _ExpertForward,
                                d_slots):
  """The input gradients per expert on its filled rows.

  Returns:
    (d_outputs, d_pres, d_inputs): per expert, the output gradient at its filled rows
    [rows, d], the gradients of its pre-activations (one [rows, h] per wi kernel) and of its
    input rows [rows, d].
  """
  d_outputs = layout.gather(d_slots, d_model)
  d_pres = _elementwise_gradient(
      forward, [_transposed_product(d_out, wo)
                for d_out, wo in zip(d_outputs, forward.wo_kernels, strict=True)])
  d_inputs = []
  for expert in range(layout.num_experts):
    d_input = None
    for kernel, d_pre in zip(forward.wi_kernels, d_pres[expert], strict=True):
      term = _transposed_product(d_pre, kernel[expert])
      d_input = term if d_input is None else d_input + term
    d_inputs.append(d_input)
  return d_outputs, d_pres, d_inputs


def _slot_layout_gradient(layout: _SlotLayout, slots, kernels, forward: _ExpertForward,
                          d_slots):
  """The weight gradients batched over the experts' slots; the input gradients too, or, where
  oneDNN's AVX2 sgemm runs them (``cpu_gemm.direct_transposed_products``), per expert on its
  filled rows. The elementwise part is packed.

  Empty slots are zero in slots, in the stitched hidden layer and in d_pre, so they add
  nothing to any product; the rows of d_slots in empty slots are never read (the hidden
  layer's gradient is computed or gathered at the filled rows only).

  Returns:
    The gradients of (slots, rows, rows_per_expert, *kernels), None for the indices.
  """
  *wi_stacked, wo_stacked = kernels
  d_model, hidden_width = slots.shape[3], wo_stacked.shape[1]
  d_slot_rows = layout.by_slot(d_slots, d_model)
  per_expert_inputs = cpu_gemm.direct_transposed_products()
  if per_expert_inputs:
    _, d_pres, d_inputs = _per_expert_input_gradients(layout, d_model, forward, d_slots)
  else:
    d_hidden_slots = _transposed_product(d_slot_rows, wo_stacked)  # [e, s, h]
    d_pres = _elementwise_gradient(forward, layout.gather(d_hidden_slots, hidden_width))
  d_pre_slots = [layout.by_slot(layout.to_slots([d_pre[k] for d_pre in d_pres], hidden_width),
                                hidden_width) for k in range(len(wi_stacked))]
  if per_expert_inputs:
    d_input = layout.to_slots(d_inputs, d_model)
  else:
    d_input = tf.reshape(
        tf.add_n([_transposed_product(d_pre_slot, kernel)
                  for d_pre_slot, kernel in zip(d_pre_slots, wi_stacked, strict=True)]),
        slots.shape)
  d_wi = [tf.matmul(layout.by_slot(slots, d_model), d_pre_slot, transpose_a=True)
          for d_pre_slot in d_pre_slots]
  d_wo = tf.matmul(layout.by_slot(layout.to_slots(forward.hiddens, hidden_width), hidden_width),
                   d_slot_rows, transpose_a=True)
  return [d_input, None, None] + d_wi + [d_wo]


def _per_expert_gradient(layout: _SlotLayout, d_model: int, forward: _ExpertForward, d_slots):
  """Every product per expert on its filled rows; weight gradients stacked.

  Returns:
    The gradients of (slots, rows, rows_per_expert, *kernels), None for the indices.
  """
  d_outputs, d_pres, d_inputs = _per_expert_input_gradients(layout, d_model, forward, d_slots)
  d_wi = [tf.stack([tf.matmul(piece, d_pre[k], transpose_a=True)
                    for piece, d_pre in zip(forward.inputs, d_pres, strict=True)])
          for k in range(len(forward.wi_kernels))]
  d_wo = tf.stack([tf.matmul(hidden, d_out, transpose_a=True)
                   for hidden, d_out in zip(forward.hiddens, d_outputs, strict=True)])
  return [layout.to_slots(d_inputs, d_model), None, None] + d_wi + [d_wo]


def _packed_slot_ffn(slots, counts, *kernels, activations, dropout_rate, train,
                     expected_fill=1.0):
  """tf slice function: the FFN of each expert on its filled slots only.

  Args:
    slots: [e, g, c, d] slot contents.
    counts: [e, g] float32 filled slots (a prefix of c) per expert and group.
    kernels: wi kernels [e, d, h] (one per activation factor), then wo [e, h, d].
    activations: the ACTIVATIONS entry.
    dropout_rate, train: expert dropout on the hidden layer.
    expected_fill: the fraction of its slots an expert fills under balanced routing (for
      ``cpu_gemm.forward_padding``; the values do not depend on it).

  Returns:
    [e, g, c, d], zero in empty slots.

  The steps: ``_slot_layout`` finds the filled rows, ``_expert_forward`` runs each expert on
  its own, ``_SlotLayout.to_slots`` writes the results back. The gradient is written out
  (``tf.custom_gradient``) rather than left to TensorFlow, for speed only (the values are the
  same): the products take the layout that suits the slot count
  (``BATCHED_BACKWARD_MAX_SLOTS``: ``_slot_layout_gradient``, batched over every slot, or
  ``_per_expert_gradient``, per expert on its filled rows), input gradients multiply in the
  form ``_transposed_product`` makes fast, and the elementwise part is differentiated by one
  ``tf.gradients`` call (``_elementwise_gradient``).
  """
  num_experts, num_groups, capacity, d_model = (slots.shape[i] for i in range(4))
  layout = _slot_layout(counts, num_experts, num_groups, capacity)

  # The index tensors are arguments (with no gradient): tf.custom_gradient looks for variables
  # behind every differentiable op between its arguments and its results, and would walk
  # from the row counts into the router.
  @tf.custom_gradient
  def ffn(slots, rows, rows_per_expert, *kernels):
    inner = dataclasses.replace(layout, rows=rows, rows_per_expert=rows_per_expert)
    forward = _expert_forward(inner, slots, kernels, activations, dropout_rate, train,
                              expected_fill)

    def gradient(d_slots):
      if inner.slots_per_expert <= BATCHED_BACKWARD_MAX_SLOTS:
        return _slot_layout_gradient(inner, slots, kernels, forward, d_slots)
      return _per_expert_gradient(inner, d_model, forward, d_slots)

    return inner.to_slots(forward.outputs, d_model), gradient

  return ffn(slots, layout.rows, layout.rows_per_expert, *kernels)


def _expert_kernels(expert_inputs: mtf.Tensor, experts_dim: mtf.Dimension, hidden_size: int,
                    activation: str, variable_dtype: mtf.VariableDType,
                    init_scale: float) -> list:
  """The experts' weights, as ``experts.expert_ffn`` creates them (same names and shapes):
  wi [experts, d_model, expert_hidden] (wi_0, wi_1 for gated activations), then wo
  [experts, expert_hidden, d_model]."""
  model_dim = expert_inputs.shape.dims[-1]
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
  return kernels


def packed_expert_ffn(expert_inputs: mtf.Tensor, filled_slots: mtf.Tensor,
                      experts_dim: mtf.Dimension, hidden_size: int, activation: str,
                      dropout_rate: float, train: bool, variable_dtype: mtf.VariableDType,
                      init_scale: float, expected_fill: float) -> mtf.Tensor:
  """``experts.expert_ffn`` computed on the filled slots only (see the module docstring).

  Args:
    expert_inputs: [experts, groups, expert_capacity, d_model]; the slots of each (expert,
      group) beyond its filled count must be zero (as both dispatch paths leave them).
    filled_slots: [experts, groups] float32 filled-slot counts, laid out like expert_inputs.
    expected_fill: the fraction of its slots an expert fills under balanced routing (tokens
      per group x choices per token / (experts x capacity), at most 1); it sizes the products
      for ``cpu_gemm.forward_padding`` and changes no value.
    Other arguments as ``expert_ffn``.

  Returns:
    [experts, groups, expert_capacity, d_model]; equal to ``expert_ffn`` (whose empty slots
    are zero too: no biases, and every activation maps 0 to 0).
  """
  check_activation(activation)
  groups_dim = expert_inputs.shape.dims[1]
  kernels = _expert_kernels(expert_inputs, experts_dim, hidden_size, activation,
                            variable_dtype, init_scale)

  def slice_fn(slots, counts, *kernel_slices):
    return _packed_slot_ffn(slots, counts, *kernel_slices, activations=ACTIVATIONS[activation],
                            dropout_rate=dropout_rate, train=train, expected_fill=expected_fill)

  # The kernels too go through an identity of their own: Mesh-TF's autostack makes the
  # kernels of all layers of one shape outputs of a single unstack op, and tf.gradients, which
  # the slicewise op's gradient calls, works by op: from that shared op it would build (dead)
  # gradient ops back through every earlier layer, a graph that grows with depth squared.
  return materialized(mtf.slicewise(
      slice_fn, [materialized(t) for t in [expert_inputs, filled_slots, *kernels]],
      output_shape=expert_inputs.shape, output_dtype=expert_inputs.dtype,
      splittable_dims=[experts_dim, groups_dim], grad_function=device_local_gradient,
      name="packed_expert_ffn"))


def _batched_slot_ffn(slots, *kernels, activations, dropout_rate, train):
  """tf slice function: every expert's FFN on all of its slots, as batched matmuls.

  Args:
    slots: [e, g, c, d] slot contents.
    kernels: wi kernels [e, d, h] (one per activation factor), then wo [e, h, d].
    activations: the ACTIVATIONS entry.
    dropout_rate, train: expert dropout on the hidden layer.

  Returns:
    [e, g, c, d]. The gradient is TensorFlow's: the batched matmul's, whose weight gradient
    is one [e, d, g*c] x [e, g*c, h] product.
  """
  num_experts, num_groups, capacity, d_model = (slots.shape[i] for i in range(4))
  rows = tf.reshape(slots, [num_experts, num_groups * capacity, d_model])
  *wi_kernels, wo_kernel = kernels
  hidden = _hidden_layer([tf.matmul(rows, kernel) for kernel in wi_kernels], activations,
                         dropout_rate, train)
  outputs = tf.matmul(hidden, wo_kernel)
  return tf.reshape(outputs, [num_experts, num_groups, capacity, outputs.shape[-1]])


def batched_expert_ffn(expert_inputs: mtf.Tensor, experts_dim: mtf.Dimension,
                       hidden_size: int, activation: str, dropout_rate: float, train: bool,
                       variable_dtype: mtf.VariableDType, init_scale: float) -> mtf.Tensor:
  """``experts.expert_ffn`` on every slot, with each device's slots as one batch of rows.

  Mesh-TF lowers ``expert_ffn``'s einsums to 4-D ``tf.einsum`` calls whose weight gradients
  contract the groups and capacity axes together ([e, g, c, d] x [e, g, c, h] -> [e, d, h]);
  the CPU einsum transposes its operands for that. Merging groups and capacity into one rows
  axis on each device makes every product of the forward and backward a plain batched matmul
  (the rows axis is a batch the matmul kernels take as it is).

  Args and returns: as ``expert_ffn`` (expert_inputs [experts, groups, expert_capacity,
  d_model] -> the same shape); the same variables. The slicewise op's gradient is per device,
  so the caller must keep every expert weight on devices that hold all of its groups (experts
  split, or the groups whole) and d_model and expert_hidden whole (``plan_dispatch``).
  """
  check_activation(activation)
  groups_dim = expert_inputs.shape.dims[1]
  kernels = _expert_kernels(expert_inputs, experts_dim, hidden_size, activation,
                            variable_dtype, init_scale)

  def slice_fn(slots, *kernel_slices):
    return _batched_slot_ffn(slots, *kernel_slices, activations=ACTIVATIONS[activation],
                             dropout_rate=dropout_rate, train=train)

  # materialized: as in packed_expert_ffn (lazy all-reduces, and autostack's shared unstack).
  return materialized(mtf.slicewise(
      slice_fn, [materialized(t) for t in [expert_inputs, *kernels]],
      output_shape=expert_inputs.shape, output_dtype=expert_inputs.dtype,
      splittable_dims=[experts_dim, groups_dim], grad_function=device_local_gradient,
      name="batched_expert_ffn"))
