"""Moving tokens to their expert slots and back (the einsum path of the paper).

  dispatch:  [groups, tokens, d_model] x [groups, tokens, experts, capacity]
             -> [experts, groups, capacity, d_model]
  combine:   [experts, groups, capacity, d_model] x [groups, tokens, experts, capacity]
             -> [groups, tokens, d_model]

Expert parallelism: when the experts dimension is laid out on the same mesh dimension as the
groups (layout ``experts:batch`` beside ``batch:batch``), the tensor is built split over groups
and re-split over experts by a reshape, which Mesh-TF lowers to an all-to-all; the experts then
run on the devices that hold their weights. When the experts dimension is not laid out, the
groups stay split and nothing moves (re-splitting there would replicate every group on every
device, which is what moe.py does under pure data parallelism).
"""

import mesh_tensorflow as mtf


def unsplit_dim(dim: mtf.Dimension) -> mtf.Dimension:
  """The same size under a name no layout rule mentions, so it is never split."""
  return mtf.Dimension(dim.name + "_unsplit", dim.size)


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
  if experts_are_split:
    # [experts_unsplit, groups(split)] -> [experts(split), groups_unsplit]: the all-to-all.
    return mtf.reshape(expert_inputs,
                       [experts_dim, unsplit_dim(groups_dim), capacity_dim, model_dim])
  return mtf.rename_dimension(expert_inputs, experts_unsplit.name, experts_dim.name)


def combine(expert_outputs: mtf.Tensor, combine_weights: mtf.Tensor,
            groups_dim: mtf.Dimension, experts_are_split: bool) -> mtf.Tensor:
  """Scatters expert outputs back to token positions, each weighted by its gate.

  Args:
    expert_outputs: [experts, groups(_unsplit), expert_capacity, d_model].
    combine_weights: [groups, tokens_per_group, experts_unsplit, expert_capacity].
    groups_dim: the (split) groups dimension of the token-major tensors.
    experts_are_split: as for ``dispatch``.

  Returns:
    [groups, tokens_per_group, d_model]; a token no expert took is all zeros.
  """
  experts_dim, _, capacity_dim, model_dim = expert_outputs.shape.dims
  experts_unsplit = combine_weights.shape.dims[-2]
  if experts_are_split:
    expert_outputs = mtf.reshape(expert_outputs,
                                 [experts_unsplit, groups_dim, capacity_dim, model_dim])
  else:
    expert_outputs = mtf.rename_dimension(expert_outputs, experts_dim.name, experts_unsplit.name)
  tokens_dim = combine_weights.shape.dims[1]
  return mtf.einsum([expert_outputs, combine_weights],
                    output_shape=[groups_dim, tokens_dim, model_dim])
