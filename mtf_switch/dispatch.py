"""Moving tokens to their expert slots and back, by one-hot einsum or by index.

Two interchangeable paths, the same outputs and gradients:

  einsum (the paper's, right for TPU matrix units)
    dispatch:  [groups, tokens, d_model] x [groups, tokens, experts, capacity]
               -> [experts, groups, capacity, d_model]
    combine:   [experts, groups, capacity, d_model] x [groups, tokens, experts, capacity]
               -> [groups, tokens, d_model]
    Each token meets every slot of its group: e x c x d = capacity_factor x tokens_per_group
    x d multiply-adds per token and direction, whatever the expert FFN costs.

  gather (by index, inside each group; for CPU and GPU)
    dispatch:  each [expert, capacity] slot copies the row of the token that holds it (an
               empty slot copies a zero row): O(e c d) per group, no [g, t, e, c] tensor.
    combine:   each token gathers its slot's output row(s) and weights them by its gate:
               O(t d) per group and choice.
    The index work runs in ``mtf.slicewise`` with the tokens dimension never split, so
    ``tf.gather`` stays local to each group; gradients are TensorFlow's (a gather's gradient
    is a segment sum), and reach the router through the gate. Each device must hold whole
    d_model rows (the layer falls back to einsum under "auto" when a layout splits d_model).

``plan_dispatch`` is the one place that picks the path and every fallback (TPU or not, a
split d_model, the packed expert FFN); the layer then runs one method per path.

Expert parallelism (both paths): when the experts dimension is laid out on the same mesh
dimension as the groups (layout ``experts:batch`` beside ``batch:batch``), the slot tensor is
built split over groups and re-split over experts by a reshape, which Mesh-TF lowers to an
all-to-all; the experts then run on the devices that hold their weights. When the experts
dimension is not laid out, the groups stay split and nothing moves (re-splitting there would
replicate every group on every device, which is what moe.py does under pure data parallelism).
"""

import dataclasses
from typing import Sequence

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

from mtf_switch import routing, settings

PATHS = ("auto", "einsum", "gather")


def unsplit_dim(dim: mtf.Dimension) -> mtf.Dimension:
  """The same size under a name no layout rule mentions, so it is never split."""
  return mtf.Dimension(dim.name + "_unsplit", dim.size)


class _DeviceLocalGradOperation(mtf.GenericGradOperation):
  """Mesh-TF's default gradient of a slicewise op, computed where each slice was.

  ``mtf.GenericGradOperation`` calls ``tf.gradients`` once per slice with no device, so the
  gradient ops of every slice land on the graph's default device: on a placement mesh spread
  over several processes (``switch_cli.cluster``), the client's, and each slice's forward
  tensors and weights cross to it and back (measured: 18 MB per step more between processes
  for switch_tiny's expert FFN at 2 workers, ``tools/bench_cluster.py``). Colocating each
  gradient op with the forward op it differentiates keeps it on that slice's device.
  """

  def lower(self, lowering):
    def per_slice(tensors):
      return mtf.transpose_list_of_lists([lowering.tensors[t].tensor_list for t in tensors])

    grads_per_slice = [
        tf.gradients(ys, xs, grad_ys=grad_ys, colocate_gradients_with_ops=True,
                     unconnected_gradients=tf.UnconnectedGradients.ZERO)
        for ys, xs, grad_ys in zip(per_slice(self._forward_op.outputs),
                                   per_slice(self._forward_op.inputs),
                                   per_slice(self._grad_ys), strict=True)]
    laid_out = lowering.mesh_impl(self).LaidOutTensor
    for output, slices in zip(self.outputs, mtf.transpose_list_of_lists(grads_per_slice),
                              strict=True):
      lowering.set_tensor_lowering(output, laid_out.from_tensor_list(slices))


def device_local_gradient(forward_op: mtf.Operation, *grad_ys: mtf.Tensor) -> list:
  """A ``grad_function`` for ``mtf.slicewise``: TensorFlow's gradient of the slice function,
  each slice's on its own device (``_DeviceLocalGradOperation``)."""
  return _DeviceLocalGradOperation(forward_op, list(grad_ys)).outputs


def materialized(x: mtf.Tensor) -> mtf.Tensor:
  """x, with any pending all-reduce carried out, and so is its gradient.

  Mesh-TF may leave an einsum's output (or its gradient) as a lazy all-reduce sum; a
  slicewise op reduces a lazy input in its forward pass, but its default (TensorFlow)
  gradient cannot read a lazy input or a lazy incoming gradient. Wrapping the inputs and
  outputs of the index ops in this identity keeps both directions concrete.
  """
  return mtf.slicewise(tf.identity, [x], splittable_dims=x.shape.dims,
                       grad_function=lambda op, dy: [materialized(dy)], name="materialized")


def check_path(path: str) -> None:
  settings.one_of("dispatch_path", path, PATHS)


def building_for_tpu() -> bool:
  """Whether the graph being built runs on TPU (inside a TPU replicate / XLA context)."""
  from tensorflow.python.ops import control_flow_util  # pylint: disable=import-outside-toplevel
  from tensorflow.python.tpu import tpu_function  # pylint: disable=import-outside-toplevel
  if tpu_function.get_tpu_context().number_of_shards is not None:
    return True
  graph = tf.get_default_graph()
  context = getattr(graph, "_get_control_flow_context", lambda: None)()
  return control_flow_util.GetContainingXLAContext(context) is not None if context else False


def resolve_path(path: str) -> str:
  """"auto" -> "einsum" when the graph is built for TPU, else "gather".

  Mesh-TF builds the graph before it is lowered, so "auto" looks at where the graph is being
  built: inside a TPU computation (TPUEstimator's model_fn under ``tpu.rewrite``, which is
  where t5's mesh transformer lowers its SIMD mesh) the one-hot einsum feeds the matrix
  units; anywhere else (placement meshes on CPU and GPU) moving rows by index is faster.
  """
  check_path(path)
  if path != "auto":
    return path
  return "einsum" if building_for_tpu() else "gather"


@dataclasses.dataclass(frozen=True)
class DispatchPlan:
  """How one layer application moves tokens, decided once by ``plan_dispatch``.

  Attributes:
    path: "einsum" or "gather".
    packed_experts: gather path only: run the expert FFN on the filled slots only
      (``packed_experts``).
    batched_experts: run the expert FFN on every slot as batched matmuls over each device's
      slots (``packed_experts.batched_expert_ffn``) instead of Mesh-TF einsums.
    experts_are_split: the layout puts the experts dimension on a mesh dimension, so the
      slot tensor is re-split over experts by an all-to-all.
  """

  path: str
  packed_experts: bool
  experts_are_split: bool
  batched_experts: bool = False


def plan_dispatch(requested: str, *, model_split: int, groups_split: int,
                  experts_are_split: bool, experts_can_pack: bool,
                  skip_empty_slots: bool, batch_expert_slots: bool = True,
                  model_dim_name: str = "d_model") -> DispatchPlan:
  """The one place that picks the dispatch path and every fallback.

  Args:
    requested: the layer's ``dispatch_path`` ("auto", "einsum" or "gather").
    model_split: devices the layout splits d_model over.
    groups_split: devices the layout splits the groups (the batch) over.
    experts_are_split: whether the layout puts the experts dimension on a mesh dimension.
    experts_can_pack: the expert computation has a filled-slots-only variant, and the
      layout keeps its inner dimensions whole on each device (``packed_experts``).
    skip_empty_slots: the layer's setting: use that variant when it is allowed.
    batch_expert_slots: the layer's setting: allow rule 4.
    model_dim_name: the name of d_model, for the error message.

  Rules, in order:
    1. "auto" is "einsum" inside a TPU computation, "gather" elsewhere (``resolve_path``).
    2. The gather path moves whole d_model rows: a layout that splits d_model falls back
       to "einsum" under "auto", and is an error when "gather" was asked for by name.
    3. The packed expert FFN runs on the gather path only, outside TPU computations (its
       row count is dynamic), when the experts can pack, and when no expert weight is
       replicated across devices holding different groups: the packed FFN is a slicewise
       op whose gradient is TensorFlow's per device, so pure data parallelism (groups split,
       experts not) would need an all-reduce of the weight gradients it does not do.
    4. Otherwise, on either path and under the same conditions but for the filled slots
       (outside TPU computations, experts that can pack, groups whole per expert weight,
       d_model whole), the expert FFN runs on every slot as batched matmuls
       (``batched_experts``); the Mesh-TF einsums over the slots remain for every other
       layout and inside TPU computations, where the paper's einsums feed the matrix units.

  Raises:
    ValueError: naming the value, for an unknown path or "gather" on a split d_model.
  """
  path = resolve_path(requested)
  if path == "gather" and model_split > 1:
    if requested == "gather":
      raise ValueError(
          f"dispatch_path='gather' needs whole d_model rows on each device; the layout splits "
          f"'{model_dim_name}' {model_split} ways (use dispatch_path='einsum')")
    path = "einsum"
  groups_whole = experts_are_split or groups_split == 1
  per_device = experts_can_pack and groups_whole and not building_for_tpu()
  packed = path == "gather" and skip_empty_slots and per_device
  batched = batch_expert_slots and not packed and per_device and model_split == 1
  return DispatchPlan(path=path, packed_experts=packed, experts_are_split=experts_are_split,
                      batched_experts=batched)


def _slot_tensor(values: mtf.Tensor, expert: mtf.Tensor, slot: mtf.Tensor,
                 experts_dim: mtf.Dimension, expert_capacity_dim: mtf.Dimension,
                 dtype) -> mtf.Tensor:
  """[g, t] values placed at [g, t, e, c] (expert, slot), built directly in dtype.

  The float32 factor is only [g, t, e]; the [g, t, e, c] product exists once, in dtype.
  """
  per_expert = mtf.one_hot(mtf.to_int32(expert), experts_dim, dtype=tf.float32) * values
  return mtf.cast(per_expert, dtype) * mtf.one_hot(
      mtf.to_int32(slot), expert_capacity_dim, dtype=dtype)


def _slot_tensor_of(route: routing.RoutingResult, value_of, dtype) -> mtf.Tensor:
  total = None
  for choice in route.choices:
    placed = _slot_tensor(value_of(choice), choice.expert, choice.slot, route.experts_dim,
                          route.expert_capacity_dim, dtype)
    total = placed if total is None else total + placed
  return total


def dispatch_mask(route: routing.RoutingResult, dtype) -> mtf.Tensor:
  """[groups, tokens_per_group, experts_unsplit, expert_capacity] 0/1, in dtype."""
  return _slot_tensor_of(route, lambda choice: choice.kept, dtype)


def combine_weights(route: routing.RoutingResult, dtype) -> mtf.Tensor:
  """[groups, tokens_per_group, experts_unsplit, expert_capacity] gates, in dtype."""
  return _slot_tensor_of(route, lambda choice: choice.gate, dtype)


def to_expert_major(slot_tensor: mtf.Tensor, experts_dim: mtf.Dimension,
                    experts_are_split: bool) -> mtf.Tensor:
  """[experts_unsplit, groups, ...] -> the layout the experts run in.

  Returns [experts, groups_unsplit, ...] (the all-to-all) if experts_are_split, else the same
  tensor with the experts dimension renamed to the layout-visible ``experts_dim``.
  """
  experts_unsplit, groups_dim = slot_tensor.shape.dims[:2]
  if experts_are_split:
    return mtf.reshape(slot_tensor, [experts_dim, unsplit_dim(groups_dim)]
                       + slot_tensor.shape.dims[2:])
  return mtf.rename_dimension(slot_tensor, experts_unsplit.name, experts_dim.name)


def to_group_major(expert_tensor: mtf.Tensor, experts_unsplit: mtf.Dimension,
                   groups_dim: mtf.Dimension, experts_are_split: bool) -> mtf.Tensor:
  """The inverse of ``to_expert_major``: back to [experts_unsplit, groups(split), ...]."""
  experts_dim = expert_tensor.shape.dims[0]
  if experts_are_split:
    return mtf.reshape(expert_tensor, [experts_unsplit, groups_dim]
                       + expert_tensor.shape.dims[2:])
  return mtf.rename_dimension(expert_tensor, experts_dim.name, experts_unsplit.name)


def dispatch(grouped_inputs: mtf.Tensor, dispatch_mask: mtf.Tensor, experts_dim: mtf.Dimension,
             experts_are_split: bool) -> mtf.Tensor:
  """Gathers each expert's tokens into its capacity slots by a one-hot einsum.

  Args:
    grouped_inputs: [groups, tokens_per_group, d_model].
    dispatch_mask: [groups, tokens_per_group, experts_unsplit, expert_capacity], 0/1; its
      experts dimension is ``unsplit_dim(experts_dim)``.
    experts_dim: the layout-visible experts dimension of the expert weights.
    experts_are_split: whether experts_dim is laid out on a mesh dimension.

  Returns:
    [experts, groups(_unsplit if experts_are_split), expert_capacity, d_model].
  """
  groups_dim, _, model_dim = grouped_inputs.shape.dims
  experts_unsplit, capacity_dim = dispatch_mask.shape.dims[-2:]
  expert_inputs = mtf.einsum(
      [grouped_inputs, dispatch_mask],
      output_shape=[experts_unsplit, groups_dim, capacity_dim, model_dim])
  return to_expert_major(expert_inputs, experts_dim, experts_are_split)


def combine(expert_outputs: mtf.Tensor, combine_weights: mtf.Tensor,
            groups_dim: mtf.Dimension, experts_are_split: bool) -> mtf.Tensor:
  """Scatters expert outputs back to token positions by a one-hot einsum, gate-weighted.

  Args:
    expert_outputs: [experts, groups(_unsplit), expert_capacity, d_model].
    combine_weights: [groups, tokens_per_group, experts_unsplit, expert_capacity].
    groups_dim: the (split) groups dimension of the token-major tensors.
    experts_are_split: as for ``dispatch``.

  Returns:
    [groups, tokens_per_group, d_model]; a token no expert took is all zeros.
  """
  model_dim = expert_outputs.shape.dims[-1]
  experts_unsplit = combine_weights.shape.dims[-2]
  expert_outputs = to_group_major(expert_outputs, experts_unsplit, groups_dim,
                                  experts_are_split)
  tokens_dim = combine_weights.shape.dims[1]
  return mtf.einsum([expert_outputs, combine_weights],
                    output_shape=[groups_dim, tokens_dim, model_dim])


def _gather_into_slots(tokens, *choice_tensors, num_experts, capacity):
  """tf slice function: [g, t, d] tokens -> [e, g, c, d] slot contents (zeros if empty).

  choice_tensors: (expert, slot, kept) per choice, each [g, t] float32.
  """
  num_groups, tokens_per_group, d_model = (tf.shape(tokens)[i] for i in range(3))
  token_ids = tf.range(tokens_per_group)[tf.newaxis, :] + tf.zeros([num_groups, 1], tf.int32)
  group_ids = tf.range(num_groups)[:, tf.newaxis] + tf.zeros([1, tokens_per_group], tf.int32)
  num_rows = num_experts * num_groups * capacity
  # Each kept token writes (its row in the flattened tokens) + 1 into its slot's cell of the
  # [e, g, c] table; a slot holds at most one token, so the segment sum is that token's row.
  table = tf.zeros([num_rows], tf.int32)
  for expert, slot, kept in zip(*[iter(choice_tensors)] * 3, strict=True):
    cell = ((tf.cast(expert, tf.int32) * num_groups + group_ids) * capacity
            + tf.cast(slot, tf.int32))
    cell = tf.where(kept > 0, cell, -tf.ones_like(cell))  # negative ids are dropped
    row = group_ids * tokens_per_group + token_ids
    table += tf.math.unsorted_segment_sum(row + 1, cell, num_rows)
  # Empty slots (nothing written) read the appended zero row.
  zero_row = num_groups * tokens_per_group
  table = tf.where(table > 0, table - 1, tf.fill([num_rows], zero_row))
  flat = tf.concat([tf.reshape(tokens, [-1, d_model]), tf.zeros([1, d_model], tokens.dtype)], 0)
  return tf.reshape(tf.gather(flat, table), [num_experts, num_groups, capacity, d_model])


def gather_dispatch(grouped_inputs: mtf.Tensor, choices: Sequence[routing.TokenChoice],
                    experts_dim: mtf.Dimension, expert_capacity_dim: mtf.Dimension,
                    experts_are_split: bool) -> mtf.Tensor:
  """Copies each kept token into its expert's capacity slot, by index.

  Args:
    grouped_inputs: [groups, tokens_per_group, d_model].
    choices: the router's per-token choices, [groups, tokens_per_group] each.
    experts_dim: the layout-visible experts dimension of the expert weights.
    expert_capacity_dim: slots per expert per group.
    experts_are_split: whether experts_dim is laid out on a mesh dimension.

  Returns:
    [experts, groups(_unsplit if experts_are_split), expert_capacity, d_model], equal to
    ``dispatch`` with the choices' dispatch mask; empty slots are zero.
  """
  groups_dim, _, model_dim = grouped_inputs.shape.dims
  experts_unsplit = unsplit_dim(experts_dim)
  choice_tensors = [t for c in choices for t in (c.expert, c.slot, c.kept)]

  def slice_fn(tokens, *choice_slices):
    return _gather_into_slots(tokens, *choice_slices, num_experts=experts_dim.size,
                              capacity=expert_capacity_dim.size)

  expert_inputs = materialized(mtf.slicewise(
      slice_fn, [materialized(t) for t in [grouped_inputs] + choice_tensors],
      output_shape=[experts_unsplit, groups_dim, expert_capacity_dim, model_dim],
      output_dtype=grouped_inputs.dtype,
      splittable_dims=[groups_dim], grad_function=device_local_gradient,
      name="gather_dispatch"))
  return to_expert_major(expert_inputs, experts_dim, experts_are_split)


def _gather_from_slots(slots, *choice_tensors, capacity):
  """tf slice function: [e, g, c, d] slot outputs -> [g, t, d], each token's gated output.

  choice_tensors: (expert, slot, gate) per choice, [g, t] each; gate in the slots' dtype.
  """
  num_groups, d_model = tf.shape(slots)[1], tf.shape(slots)[3]
  flat = tf.reshape(slots, [-1, d_model])
  total = None
  for expert, slot, gate in zip(*[iter(choice_tensors)] * 3, strict=True):
    tokens_per_group = tf.shape(expert)[1]
    group_ids = tf.range(num_groups)[:, tf.newaxis] + tf.zeros([1, tokens_per_group], tf.int32)
    # A token that was not kept points at slot (expert 0, slot 0) of its group; its gate is
    # exactly zero, so it adds exactly zero (expert outputs are finite).
    row = ((tf.cast(expert, tf.int32) * num_groups + group_ids) * capacity
           + tf.cast(slot, tf.int32))
    gated = tf.gather(flat, row) * gate[:, :, tf.newaxis]
    total = gated if total is None else total + gated
  return total


def gather_combine(expert_outputs: mtf.Tensor, choices: Sequence[routing.TokenChoice],
                   groups_dim: mtf.Dimension, tokens_dim: mtf.Dimension,
                   experts_are_split: bool) -> mtf.Tensor:
  """Each token takes its slot's expert output, weighted by its gate, by index.

  Args:
    expert_outputs: [experts, groups(_unsplit), expert_capacity, d_model].
    choices: the router's per-token choices, [groups, tokens_per_group] each.
    groups_dim: the (split) groups dimension of the token-major tensors.
    tokens_dim: tokens_per_group.
    experts_are_split: as for ``gather_dispatch``.

  Returns:
    [groups, tokens_per_group, d_model]; a token no expert took is all zeros. Equal to
    ``combine`` with the choices' combine weights.
  """
  experts_dim, _, capacity_dim, model_dim = expert_outputs.shape.dims
  experts_unsplit = unsplit_dim(experts_dim)
  slots = to_group_major(expert_outputs, experts_unsplit, groups_dim, experts_are_split)
  dtype = slots.dtype
  # The einsum path multiplies by combine weights cast to the activation dtype; so do we.
  choice_tensors = [t for c in choices for t in (c.expert, c.slot, mtf.cast(c.gate, dtype))]

  def slice_fn(slot_outputs, *choice_slices):
    return _gather_from_slots(slot_outputs, *choice_slices, capacity=capacity_dim.size)

  return materialized(mtf.slicewise(
      slice_fn, [materialized(t) for t in [slots] + choice_tensors],
      output_shape=[groups_dim, tokens_dim, model_dim], output_dtype=dtype,
      # d_model stays whole: the gate's gradient sums over it inside the slice.
      splittable_dims=[groups_dim], grad_function=device_local_gradient,
      name="gather_combine"))


def filled_slots(route: routing.RoutingResult, experts_dim: mtf.Dimension,
                 groups_dim: mtf.Dimension, experts_are_split: bool) -> mtf.Tensor:
  """[experts, groups(_unsplit)] float32 filled-slot counts, laid out like the expert inputs."""
  counts = None  # [groups, experts_unsplit]
  for choice in route.choices:
    per_token = mtf.one_hot(mtf.to_int32(choice.expert), route.experts_dim,
                            dtype=tf.float32) * choice.kept
    count = mtf.reduce_sum(per_token, reduced_dim=per_token.shape.dims[1])
    counts = count if counts is None else counts + count
  counts = mtf.transpose(counts, [route.experts_dim, groups_dim])
  return to_expert_major(counts, experts_dim, experts_are_split)
