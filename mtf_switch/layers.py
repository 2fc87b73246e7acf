"""Gin-configurable Mesh-TF TransformerLayers: the Switch FFN and the top-2 MoE FFN.

Both drop into the ``layers`` of a ``mesh_tensorflow.transformer`` LayerStack (encoder or
decoder of a Bitransformer, or a Unitransformer) in place of ``DenseReluDense``:

    x [batch..., length, d_model]
      -> groups             [groups, tokens_per_group, d_model]          (capacity.plan_groups)
      -> router             per-token expert, slot and gate [groups, tokens], losses
      -> dispatch           [experts, groups, capacity, d_model]          (dispatch.*dispatch)
      -> experts            [experts, groups, capacity, d_model]          (experts.*expert_ffn)
      -> combine            [groups, tokens, d_model]                     (dispatch.*combine)

``dispatch_path`` picks how tokens move: "einsum" (one-hot [groups, tokens, experts,
capacity] einsums, the paper's TPU algorithm), "gather" (by index; on a placement mesh the
expert FFN then also skips empty capacity slots), or "auto" (the default: einsum when the
graph is built inside a TPU computation, gather otherwise; ``dispatch.resolve_path``). Both
paths route identically and give the same outputs and gradients.
      -> y [batch..., length, d_model]

The LayerStack adds y to the residual stream, so a token no expert took (over capacity, or
padding) leaves the layer unchanged. The weighted auxiliary loss (alpha * load-balance loss,
plus the optional z-loss) is appended to ``context.losses``, which Mesh-TF adds to the
training loss. All sizes are fixed here at graph-build time; bad ones raise ValueError naming
the value before any TensorFlow op exists.
"""

import dataclasses
import inspect
import math
from typing import Optional

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import transformer

import gin
from mtf_switch import capacity as capacity_lib
from mtf_switch import dispatch as dispatch_lib
from mtf_switch import experts as experts_lib
from mtf_switch import packed_experts, routing
from mtf_switch import summaries as summaries_lib

EXPERTS_DIM_NAME = "experts"
TOKENS_DIM_NAME = "tokens_per_group"
CAPACITY_DIM_NAME = "expert_capacity"
MAX_PER_EXPERT_SUMMARIES = 128


@dataclasses.dataclass
class SparseFFNOutput:
  """What one application of the layer produced.

  Attributes:
    outputs: same shape and dtype as the layer input.
    aux_loss: float32 scalar added to the training loss (coefficients applied).
    routing: the router's RoutingResult (masks, unscaled losses, statistics).
    group_plan: the static groups; expert_capacity: the static slots per expert per group.
  """

  outputs: mtf.Tensor
  aux_loss: mtf.Tensor
  routing: routing.RoutingResult
  group_plan: capacity_lib.GroupPlan
  expert_capacity: int


def _has_mesh_dim(layout, mesh_shape, dim: mtf.Dimension) -> bool:
  """Whether the layout puts ``dim`` on a mesh dimension (of any size, 1 included)."""
  rules = mtf.convert_to_layout_rules(layout)
  return rules.tensor_dimension_to_mesh_axis(dim, mtf.convert_to_shape(mesh_shape)) is not None


def _check_rate(name: str, value: float) -> None:
  if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
    raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def _check_nonnegative(name: str, value: float) -> None:
  if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0.0):
    raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def configurable(cls):
  """gin.configurable(module="mtf_switch") that knows every argument of the __init__ chain.

  The layers pass shared arguments to their bases through **kwargs, which would let gin accept
  any name; listing the real ones makes a typo'd binding fail when the gin file is parsed.
  """
  names = []
  for klass in cls.__mro__:
    init = klass.__dict__.get("__init__")
    if init is None or klass is transformer.TransformerLayer:
      continue
    for param in inspect.signature(init).parameters.values():
      if param.name != "self" and param.kind == param.POSITIONAL_OR_KEYWORD:
        names.append(param.name)
  return gin.configurable(cls, module="mtf_switch", allowlist=sorted(set(names)))


class _RoutedExperts(transformer.TransformerLayer):
  """Groups, capacity, routing, dispatch and combine around a pluggable expert computation.

  Subclasses choose the router (``_route``) and what the experts compute
  (``_expert_computation``).
  """

  def __init__(self,
               num_experts: int = 8,
               group_size: int = 1024,
               capacity_factor_train: float = 1.25,
               capacity_factor_eval: float = 2.0,
               min_expert_capacity: int = 4,
               load_balance_loss_coef: float = 1e-2,
               z_loss_coef: float = 0.0,
               router_policy_train: str = "input_jitter",
               router_policy_eval: str = "argmax",
               jitter_eps: float = 1e-2,
               router_input_dropout_rate: float = 0.1,
               sample_temperature: float = 1.0,
               init_scale: float = 0.1,
               router_dtype: str = "float32",
               summaries: bool = True,
               dispatch_path: str = "auto",
               skip_empty_slots: bool = True,
               fixed_expert_capacity: Optional[int] = None):
    """Configures routing; every value is checked here, at graph-build time.

    Args:
      num_experts: experts in the layer (N in eq. 4).
      group_size: the largest routing group; capacity is per group.
      capacity_factor_train: capacity factor while training (paper: 1.0 or 1.25).
      capacity_factor_eval: capacity factor in evaluation and inference.
      min_expert_capacity: floor on slots per expert per group.
      load_balance_loss_coef: alpha of eq. 4 (paper: 0.01).
      z_loss_coef: router z-loss coefficient (ST-MoE; 0 = off, the paper's setting).
      router_policy_train: exploration while training: argmax, sample, input_dropout,
        input_jitter (App. C; input_jitter is the paper's choice).
      router_policy_eval: the same for evaluation.
      jitter_eps: epsilon of the multiplicative input jitter (paper: 0.01).
      router_input_dropout_rate: dropout of the input_dropout policy.
      sample_temperature: temperature of the sample policy.
      init_scale: s of the truncated-normal init sigma = sqrt(s / fan_in) for the router and
        expert weights (paper: 0.1).
      router_dtype: "float32" (selective precision: the router computes in float32 whatever
        the activation dtype, the paper's choice) or "bfloat16" (Table 2's "bfloat16
        everywhere" row, which the paper found unstable).
      summaries: write per-layer TensorBoard scalars while training.
      dispatch_path: "auto", "einsum" or "gather" (see the module docstring).
      skip_empty_slots: on the gather path, outside TPU computations, run the expert FFN on
        the filled capacity slots only (``packed_experts``) when each device holds whole
        d_model and d_ff rows; the same results, fewer FLOPs below full capacity.
      fixed_expert_capacity: None (capacity from the capacity factors), or an absolute number
        of slots per expert per group, used in training and evaluation alike (Hugging Face's
        ``expert_capacity``; with ``group_size`` = the sequence length it is HF's routing).
    """
    dispatch_lib.check_path(dispatch_path)
    capacity_lib.require_positive_int("num_experts", num_experts)
    capacity_lib.require_positive_int("group_size", group_size)
    # Both factors are checked now, so an eval-only typo cannot survive a long training run.
    for factor in (capacity_factor_train, capacity_factor_eval):
      capacity_lib.expert_capacity(1, 1, factor, 1)
    capacity_lib.require_positive_int("min_expert_capacity", min_expert_capacity)
    if fixed_expert_capacity is not None:
      capacity_lib.require_positive_int("fixed_expert_capacity", fixed_expert_capacity)
    self.fixed_expert_capacity = fixed_expert_capacity
    _check_nonnegative("load_balance_loss_coef", load_balance_loss_coef)
    _check_nonnegative("z_loss_coef", z_loss_coef)
    self.num_experts = num_experts
    self.group_size = group_size
    self.capacity_factor_train = capacity_factor_train
    self.capacity_factor_eval = capacity_factor_eval
    self.min_expert_capacity = min_expert_capacity
    self.load_balance_loss_coef = load_balance_loss_coef
    self.z_loss_coef = z_loss_coef
    self.init_scale = init_scale
    self.summaries = summaries
    self.dispatch_path = dispatch_path
    self.skip_empty_slots = bool(skip_empty_slots)
    self.router_config = routing.RouterConfig(
        policy_train=router_policy_train,
        policy_eval=router_policy_eval,
        jitter_eps=jitter_eps,
        input_dropout_rate=router_input_dropout_rate,
        sample_temperature=sample_temperature,
        init_scale=init_scale,
        dtype=router_dtype)

  def _expert_computation(self, expert_inputs, experts_dim, train, variable_dtype,
                          filled_slots=None):
    """[experts, groups, capacity, d_model] -> [experts, groups, capacity, out_dim].

    filled_slots: None, or [experts, groups] filled-slot counts; when given, the computation
    may skip the empty slots (whose outputs must then be zero).
    """
    raise NotImplementedError

  def _can_skip_empty_slots(self, layout, mesh_shape, model_dim) -> bool:
    """Whether each device holds whole d_model rows, so slots can be packed (no TPU)."""
    del layout, mesh_shape, model_dim
    return False

  def _check_layout(self, layout, mesh_shape) -> None:
    """Raises ValueError if an expert dimension does not divide its mesh dimension."""
    experts_split = mtf.tensor_dim_to_mesh_dim_size(
        layout, mesh_shape, mtf.Dimension(EXPERTS_DIM_NAME, self.num_experts))
    if self.num_experts % experts_split:
      raise ValueError(
          f"num_experts={self.num_experts} is not divisible by the {experts_split} devices of "
          f"the mesh dimension that the layout puts '{EXPERTS_DIM_NAME}' on")

  # Subclasses: the routing decision for one grouped batch.
  def _route(self, grouped_inputs, token_mask, experts_dim, capacity_dim, train,
             variable_dtype) -> routing.RoutingResult:
    raise NotImplementedError

  def call(self, context, x, losses=None):
    """Mesh-TF TransformerLayer entry point: returns y with x's shape."""
    del losses
    if getattr(context.model, "ensemble_dim", None):
      raise NotImplementedError(f"{type(self).__name__} does not support model ensembles")
    result = self.apply(
        x,
        train=context.train,
        variable_dtype=context.variable_dtype,
        layout=context.model.layout,
        mesh_shape=context.model.mesh_shape,
        nonpadding=context.nonpadding,
        num_microbatches=context.num_microbatches)
    if context.losses is not None:
      context.losses.append(result.aux_loss)
    return result.outputs

  def apply(self, x: mtf.Tensor, train: bool, variable_dtype: mtf.VariableDType,
            layout="", mesh_shape="", nonpadding=None,
            num_microbatches: Optional[int] = None) -> SparseFFNOutput:
    """The layer as a function, for tests and for callers without a Mesh-TF Context.

    Args:
      x: [batch, (more batch dims,) (length,) d_model]; the first dimension is the one the
        layout splits for data parallelism.
      train: training graph (capacity_factor_train, exploration, dropout, summaries).
      variable_dtype: mtf.VariableDType of the weights; x.dtype is the activation dtype.
      layout, mesh_shape: the model's layout rules and mesh shape, used to size groups so
        they split evenly and to check that experts fit their mesh dimension.
      nonpadding: None, 1, or a float Tensor over x's token dims (1 = real token).
      num_microbatches: the loss is divided by this, as Mesh-TF sums it per microbatch.

    Returns:
      SparseFFNOutput; outputs are [x's token dims..., out_dim] (out_dim = d_model for FFNs).
    """
    layout = layout or ""
    mesh_shape = mesh_shape or ""
    token_dims, model_dim = x.shape.dims[:-1], x.shape.dims[-1]
    batch_dim = token_dims[0]
    num_tokens = mtf.Shape(token_dims).size
    groups_split = mtf.tensor_dim_to_mesh_dim_size(layout, mesh_shape, batch_dim)
    plan = capacity_lib.plan_groups(num_tokens, self.group_size, groups_split)

    self._check_layout(layout, mesh_shape)
    experts_dim = mtf.Dimension(EXPERTS_DIM_NAME, self.num_experts)

    capacity_factor = self.capacity_factor_train if train else self.capacity_factor_eval
    if self.fixed_expert_capacity is not None:
      # More slots than tokens can never be filled; the cap changes no routing decision.
      slots = min(self.fixed_expert_capacity, plan.tokens_per_group)
    else:
      slots = capacity_lib.expert_capacity(plan.tokens_per_group, self.num_experts,
                                           capacity_factor, self.min_expert_capacity)
    groups_dim = mtf.Dimension(batch_dim.name, plan.num_groups)
    tokens_dim = mtf.Dimension(TOKENS_DIM_NAME, plan.tokens_per_group)
    capacity_dim = mtf.Dimension(CAPACITY_DIM_NAME, slots)

    grouped = mtf.reshape(x, [groups_dim, tokens_dim, model_dim])
    token_mask = routing.token_mask_from_nonpadding(nonpadding, mtf.Shape(token_dims), x.mesh)
    token_mask = mtf.reshape(token_mask, [groups_dim, tokens_dim])

    route = self._route(grouped, token_mask, dispatch_lib.unsplit_dim(experts_dim),
                        capacity_dim, train, variable_dtype)
    # Any mesh dimension counts, even one of size 1 (cpu_data_parallel.gin's "batch:1" with
    # "experts:batch"): it splits nothing, but Mesh-TF still forbids two tensor dimensions on
    # it, and without the all-to-all re-split the experts and the groups would share it.
    experts_are_split = _has_mesh_dim(layout, mesh_shape, experts_dim)
    path = dispatch_lib.resolve_path(self.dispatch_path)
    model_split = mtf.tensor_dim_to_mesh_dim_size(layout, mesh_shape, model_dim)
    if path == "gather" and model_split > 1:
      if self.dispatch_path == "gather":
        raise ValueError(
            f"dispatch_path='gather' needs whole d_model rows on each device; the layout splits "
            f"'{model_dim.name}' {model_split} ways (use dispatch_path='einsum')")
      path = "einsum"
    if path == "einsum":
      expert_inputs = dispatch_lib.dispatch(grouped, route.dispatch_mask, experts_dim,
                                            experts_are_split=experts_are_split)
      expert_outputs = self._expert_computation(expert_inputs, experts_dim, train,
                                                variable_dtype)
      outputs = dispatch_lib.combine(expert_outputs, route.combine_weights, groups_dim,
                                     experts_are_split=experts_are_split)
    else:
      expert_inputs = dispatch_lib.gather_dispatch(grouped, route.choices, experts_dim,
                                                   capacity_dim, experts_are_split)
      filled = None
      # The packed FFN is a slicewise op whose gradient is TensorFlow's per device; that is
      # only right when no weight is replicated across devices that hold different groups
      # (pure data parallelism would need an all-reduce of the weight gradients).
      groups_whole = experts_are_split or groups_split == 1
      if (self.skip_empty_slots and groups_whole and not dispatch_lib.building_for_tpu()
          and self._can_skip_empty_slots(layout, mesh_shape, model_dim)):
        filled = dispatch_lib.filled_slots(route, experts_dim, groups_dim, experts_are_split)
      expert_outputs = self._expert_computation(expert_inputs, experts_dim, train,
                                                variable_dtype, filled_slots=filled)
      outputs = dispatch_lib.gather_combine(expert_outputs, route.choices, groups_dim,
                                            tokens_dim, experts_are_split)
    outputs = mtf.reshape(outputs, token_dims + outputs.shape.dims[-1:])

    aux_loss = self.load_balance_loss_coef * route.load_balance_loss
    if self.z_loss_coef:
      aux_loss += self.z_loss_coef * route.z_loss
    if num_microbatches and num_microbatches > 1:
      aux_loss /= float(num_microbatches)
    if train and self.summaries:
      self._write_summaries(route, aux_loss)
    # Mesh-TF sums losses in the activation dtype.
    return SparseFFNOutput(outputs=outputs, aux_loss=mtf.cast(aux_loss, x.dtype),
                           routing=route, group_plan=plan, expert_capacity=slots)

  def _write_summaries(self, route: routing.RoutingResult, aux_loss: mtf.Tensor) -> None:
    """Per-layer scalars: expert load, dropped fraction, router entropy, losses.

    Loads are scaled by the number of experts, so 1.0 is perfect balance. Per-expert scalars
    stop at MAX_PER_EXPERT_SUMMARIES experts (Switch-C's 2048 x 15 layers would swamp
    TensorBoard); the busiest and idlest expert's load are always written.
    """
    prefix = "moe/" + tf.get_variable_scope().name
    stats = route.statistics
    load = stats.expert_fraction * float(self.num_experts)
    if self.num_experts <= MAX_PER_EXPERT_SUMMARIES:
      for expert, fraction in enumerate(mtf.split(load, load.shape.dims[0], self.num_experts)):
        summaries_lib.scalar_summary(f"{prefix}/expert_load/{expert:03d}", mtf.reduce_sum(fraction))
    summaries_lib.scalar_summary(f"{prefix}/expert_load_max", mtf.reduce_max(load))
    summaries_lib.scalar_summary(f"{prefix}/expert_load_min", mtf.reduce_min(load))
    summaries_lib.scalar_summary(f"{prefix}/dropped_fraction", stats.dropped_fraction)
    summaries_lib.scalar_summary(f"{prefix}/router_entropy", stats.router_entropy)
    summaries_lib.scalar_summary(f"{prefix}/load_balance_loss", route.load_balance_loss)
    summaries_lib.scalar_summary(f"{prefix}/z_loss", route.z_loss)
    summaries_lib.scalar_summary(f"{prefix}/aux_loss", mtf.to_float(aux_loss))

class _ExpertsFFN(_RoutedExperts):
  """Routed experts that are feed-forward networks (the Switch FFN and the MoE FFN)."""

  def __init__(self, hidden_size: int = 2048, activation: str = "relu",
               expert_dropout_rate: float = 0.0, **kwargs):
    """Args (beyond ``_RoutedExperts``):

      hidden_size: d_ff of each expert.
      activation: "relu", "gelu", "geglu" (Table 9's FFN_GEGLU) or "swiglu".
      expert_dropout_rate: dropout inside the experts (paper fine-tunes with 0.4).
    """
    super().__init__(**kwargs)
    capacity_lib.require_positive_int("hidden_size", hidden_size)
    experts_lib.check_activation(activation)
    _check_rate("expert_dropout_rate", expert_dropout_rate)
    self.hidden_size = hidden_size
    self.activation = activation
    self.expert_dropout_rate = expert_dropout_rate

  def _check_layout(self, layout, mesh_shape) -> None:
    super()._check_layout(layout, mesh_shape)
    hidden_split = mtf.tensor_dim_to_mesh_dim_size(
        layout, mesh_shape, mtf.Dimension(experts_lib.HIDDEN_DIM_NAME, self.hidden_size))
    if self.hidden_size % hidden_split:
      raise ValueError(
          f"hidden_size={self.hidden_size} is not divisible by the {hidden_split} devices of "
          f"the mesh dimension that the layout puts '{experts_lib.HIDDEN_DIM_NAME}' on")

  def _can_skip_empty_slots(self, layout, mesh_shape, model_dim) -> bool:
    hidden_dim = mtf.Dimension(experts_lib.HIDDEN_DIM_NAME, self.hidden_size)
    return all(mtf.tensor_dim_to_mesh_dim_size(layout, mesh_shape, dim) == 1
               for dim in (hidden_dim, model_dim))

  def _expert_computation(self, expert_inputs, experts_dim, train, variable_dtype,
                          filled_slots=None):
    if filled_slots is not None:
      return packed_experts.packed_expert_ffn(
          expert_inputs, filled_slots, experts_dim, self.hidden_size, self.activation,
          self.expert_dropout_rate, train, variable_dtype, self.init_scale)
    return experts_lib.expert_ffn(
        expert_inputs, experts_dim, self.hidden_size, self.activation,
        self.expert_dropout_rate, train, variable_dtype, self.init_scale)


@configurable
class SwitchFFN(_ExpertsFFN):
  """The Switch Transformer FFN layer: top-1 routing over ``num_experts`` experts.

  ``num_overflow_choices = k > 0`` turns on No-Token-Left-Behind (App. B): tokens that
  overflow their first expert are re-routed to their next k choices where capacity is left.
  All other arguments: see ``_ExpertsFFN.__init__``.
  """

  def __init__(self, num_overflow_choices: int = 0, **kwargs):
    super().__init__(**kwargs)
    if (isinstance(num_overflow_choices, bool) or not isinstance(num_overflow_choices, int)
        or not 0 <= num_overflow_choices < self.num_experts):
      raise ValueError(
          f"num_overflow_choices={num_overflow_choices!r} must be an integer in "
          f"[0, num_experts - 1 = {self.num_experts - 1}]")
    self.num_overflow_choices = num_overflow_choices

  def _route(self, grouped_inputs, token_mask, experts_dim, capacity_dim, train,
             variable_dtype):
    return routing.route_top1(
        grouped_inputs, token_mask, experts_dim, capacity_dim, self.router_config, train,
        variable_dtype, num_overflow_choices=self.num_overflow_choices)


@configurable
class MoEFFN(_ExpertsFFN):
  """Top-2 mixture-of-experts FFN (the paper's MoE baseline in Table 1).

  Args beyond ``_ExpertsFFN``:
    second_policy_train / second_policy_eval: when the second expert is used: "all",
      "none", "threshold" or "random" (probability min(1, gate_2 / threshold), GShard's
      choice for training). Evaluation defaults to "all" so that it is deterministic.
    second_threshold: the threshold of the "threshold" and "random" policies.
  """

  def __init__(self, second_policy_train: str = "random", second_policy_eval: str = "all",
               second_threshold: float = 0.2, **kwargs):
    kwargs.setdefault("router_policy_train", "argmax")
    super().__init__(**kwargs)
    if self.num_experts < 2:
      raise ValueError(f"MoEFFN routes to 2 experts; num_experts={self.num_experts} is too few")
    for name, policy in (("second_policy_train", second_policy_train),
                         ("second_policy_eval", second_policy_eval)):
      if policy not in routing.SECOND_EXPERT_POLICIES:
        raise ValueError(f"unknown {name}={policy!r}; expected one of "
                         f"{routing.SECOND_EXPERT_POLICIES}")
    if self.router_config.policy_train == "sample" or self.router_config.policy_eval == "sample":
      raise ValueError("router policy 'sample' picks one expert; MoEFFN always takes the top 2")
    self.second_policy_train = second_policy_train
    self.second_policy_eval = second_policy_eval
    self.second_threshold = second_threshold

  def _route(self, grouped_inputs, token_mask, experts_dim, capacity_dim, train,
             variable_dtype):
    return routing.route_top2(
        grouped_inputs, token_mask, experts_dim, capacity_dim, self.router_config, train,
        variable_dtype,
        second_policy=self.second_policy_train if train else self.second_policy_eval,
        second_threshold=self.second_threshold)
