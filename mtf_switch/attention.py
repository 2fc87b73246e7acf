"""Switch attention (paper App. A): experts in the query, key and value projections.

Each token is routed once by the layer's router (a ``SwitchRouter`` by default, or any router
given as ``router=``, the same component the FFN layers take); its expert e then projects it with
expert-specific weights W_q^e, W_k^e, W_v^e ([experts, d_model, heads * d_kv] each, stored as
one [experts, d_model, 3 * heads * d_kv] kernel), and the projections are scaled by the gate
p_e(x), as in eq. 2. Attention itself (scores, softmax, output projection W_o) is Mesh-TF's
ordinary multi-head self-attention, shared by all tokens. A token dropped by capacity gets
zero queries, keys and values: it attends uniformly and is attended to with score zero.

moe.py's ExpertsAttention routes through a two-matrix expert FFN per projection and shares
keys with values; App. A describes Switch layers replacing the projection matrices, so here
each expert is exactly one linear projection and k and v stay distinct.
"""

import inspect

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import attention, transformer_layers

from mtf_switch import layers

QKV_DIM_NAME = "qkv"


class _SwitchProjections(layers._RoutedExperts):
  """Routes tokens and applies each expert's fused q/k/v projection."""

  def __init__(self, projection_size: int, **kwargs):
    super().__init__(**kwargs)
    self.projection_size = projection_size

  def _expert_computation(self, expert_inputs, experts_dim, train, variable_dtype,
                          filled_slots=None, batched=False, expected_fill=1.0):
    # One linear projection: empty slots cost little here.
    del train, filled_slots, batched, expected_fill
    model_dim = expert_inputs.shape.dims[-1]
    return mtf.layers.dense(
        expert_inputs, mtf.Dimension(QKV_DIM_NAME, 3 * self.projection_size),
        reduced_dims=[model_dim], expert_dims=[experts_dim], use_bias=False,
        variable_dtype=variable_dtype,
        kernel_initializer=mtf.layers.VarianceScalingInitializer(scale=self.init_scale),
        name="qkv")


# The routed-experts settings SwitchAttention hands to its projections: those of
# ``layers._RoutedExperts`` plus the Switch router's No-Token-Left-Behind setting.
ROUTED_PARAMETERS = tuple(
    name for name in inspect.signature(layers._RoutedExperts.__init__).parameters
    if name not in ("self", "router_keywords")) + ("num_overflow_choices",)


class _ExpertProjectionParams(attention.AttentionParams):
  """AttentionParams whose q, k and v come from the routed experts (one routing for all)."""

  def __init__(self, context, projections: _SwitchProjections, **kwargs):
    super().__init__(make_attention_vars=False, **kwargs)
    self._context = context
    self._projections = projections
    self._k = self._v = None

  def compute_q(self, query_antecedent):
    context = self._context
    with tf.variable_scope("switch_qkv"):
      result = self._projections.apply(
          query_antecedent, train=context.train, variable_dtype=context.variable_dtype,
          layout=context.model.layout, mesh_shape=context.model.mesh_shape,
          nonpadding=context.nonpadding, num_microbatches=context.num_microbatches)
    if context.losses is not None:
      context.losses.append(result.aux_loss)
    qkv = result.outputs
    size = self._projections.projection_size
    pieces = mtf.split(qkv, qkv.shape.dims[-1], [size, size, size])
    q, k, v = (mtf.rename_dimension(p, QKV_DIM_NAME, "heads_times_kv") for p in pieces)
    self._k = mtf.replace_dimensions(k, k.shape.dims[-1], self.k_dims)
    self._v = mtf.replace_dimensions(v, v.shape.dims[-1], self.v_dims)
    q = mtf.replace_dimensions(q, q.shape.dims[-1], self.q_dims)
    # The standard params fold 1/sqrt(d_kv) into W_q's init; expert projections scale here.
    return q * (self.key_dim.size ** -0.5)

  def _like_memory(self, t, memory_antecedent):
    """Renames the query-side length dimension to the memory's (length -> memory_length)."""
    for mine, theirs in zip(t.shape.dims, memory_antecedent.shape.dims[:-1], strict=False):
      if mine != theirs and mine.size == theirs.size:
        t = mtf.replace_dimensions(t, mine, theirs)
    return t

  def compute_k(self, memory_antecedent):
    return self._like_memory(self._k, memory_antecedent)

  def compute_v(self, memory_antecedent):
    return self._like_memory(self._v, memory_antecedent)

  def compute_kv(self, memory_antecedent):
    raise NotImplementedError("SwitchAttention keeps keys and values separate (shared_kv=False)")


@layers.configurable
class SwitchAttention(transformer_layers.SelfAttention):
  """Multi-head self-attention whose q/k/v projections are Switch experts (App. A).

  Args:
    router, num_experts, group_size, capacity_factor_train, capacity_factor_eval,
    min_expert_capacity, load_balance_loss_coef, z_loss_coef, router_policy_train,
    router_policy_eval, jitter_eps, router_input_dropout_rate, sample_temperature,
    router_dtype, num_overflow_choices, init_scale, summaries, dispatch_path,
    skip_empty_slots: the routing settings (``ROUTED_PARAMETERS``), exactly as for
      ``mtf_switch.SwitchFFN``; the default router is a ``SwitchRouter``.
    num_heads, key_value_size, dropout_rate, relative_attention_type, ...: as for
      Mesh-TF's SelfAttention; only separate k and v (shared_kv=False), combined dims and
      all heads reading all memory heads (num_memory_heads=0) are supported.
  """

  _extra_gin_parameters = ROUTED_PARAMETERS

  def __init__(self, **kwargs):
    routed = {name: kwargs.pop(name) for name in ROUTED_PARAMETERS if name in kwargs}
    super().__init__(**kwargs)
    for name, unsupported in (("shared_kv", self.shared_kv),
                              ("num_memory_heads", self.num_memory_heads),
                              ("keep_query_heads_dims", self.keep_query_heads_dims),
                              ("use_hyperprompt", self.use_hyperprompt)):
      if unsupported:
        raise ValueError(f"SwitchAttention does not support {name}={unsupported!r}")
    if not self.combine_dims:
      raise ValueError("SwitchAttention needs combine_dims=True")
    self.projections = _SwitchProjections(
        projection_size=self.num_heads * self.key_value_size, **routed)

  def make_params(self, context):
    heads = [mtf.Dimension("heads", self.num_heads)] if self.num_heads > 1 else None
    return _ExpertProjectionParams(
        context, self.projections,
        mesh=context.mesh,
        query_input_dim=context.model.model_dim,
        memory_input_dim=context.model.model_dim,
        output_dim=context.model.model_dim,
        key_dim=self.kv_dim,
        value_dim=self.kv_dim,
        query_heads_dims=heads,
        memory_heads_dims=heads,
        variable_dtype=context.variable_dtype,
        shared_kv=False,
        ensemble_dim=getattr(context.model, "ensemble_dim", None),
        combine_dims=True,
        fold_scaling_into_initializer=self.fold_scaling_into_initializer)
