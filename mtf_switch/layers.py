"""Gin-configurable Mesh-TF TransformerLayers: the Switch FFN and the top-2 MoE FFN.

Both drop into the ``layers`` of a ``mesh_tensorflow.transformer`` LayerStack (encoder or
decoder of a Bitransformer, or a Unitransformer) in place of ``DenseReluDense``. Each is given
its router (``routing.SwitchRouter``, ``routing.MoERouter``) and computes

    x -> groups -> router (choices) -> dispatch -> experts -> combine -> y

Flow, with the mesh dimension each tensor dimension is split over, for the paper's expert +
data parallelism (layout ``batch:batch;experts:batch`` on mesh dimension ``b``; ``/b`` marks
a split dimension; ``expert_hidden:model`` would add ``/m`` to expert_hidden):

    x                [batch/b, length, d_model]
    grouped          [groups/b, tokens_per_group, d_model]        reshape, local: the groups
                                                                  tile each device's batch
    router           logits, probs [groups/b, tokens_per_group, experts_unsplit] float32;
                     choices: expert, slot, kept, gate [groups/b, tokens_per_group] each
    dispatch         slots [experts_unsplit, groups/b, capacity, d_model]
                       einsum: grouped x dispatch_mask [groups/b, tokens, experts_unsplit,
                       capacity]; gather: by index. Both local to each device.
    all-to-all       expert_inputs [experts/b, groups_unsplit, capacity, d_model]
                       (a reshape that moves the split from groups to experts)
    experts          hidden [experts/b, groups_unsplit, capacity, expert_hidden(/m)]
                     expert_outputs [experts/b, groups_unsplit, capacity, d_model]
                       (wo sums over expert_hidden: an all-reduce over m under model
                       parallelism)
    all-to-all       back to [experts_unsplit, groups/b, capacity, d_model]
    combine          [groups/b, tokens_per_group, d_model]   einsum with combine_weights, or
                                                             gather; local
    y                [batch/b, length, d_model]              reshape, local

When the layout does not name ``experts`` (pure data or model parallelism) nothing is
re-split: the "all-to-all" is a rename and every device runs every expert on its own groups.

``dispatch_path`` picks how tokens move: "einsum" (the paper's TPU algorithm), "gather" (by
index; on a placement mesh the expert FFN then also skips empty capacity slots), or "auto"
(einsum inside a TPU computation, gather otherwise). ``dispatch.plan_dispatch`` makes that
decision and every fallback in one place. Both paths route identically and give the same
outputs and gradients.

The LayerStack adds y to the residual stream, so a token no expert took (over capacity, or
padding) leaves the layer unchanged. The weighted auxiliary loss (alpha * load-balance loss,
plus the optional z-loss) is appended to ``context.losses``, which Mesh-TF adds to the
training loss. All sizes are fixed here at graph-build time; bad settings raise ValueError
naming the value when the layer is constructed (``settings``), bad sizes before any
TensorFlow op exists.
"""

import dataclasses
from typing import Optional, Union

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import transformer

from mtf_switch import capacity as capacity_lib
from mtf_switch import dispatch as dispatch_lib
from mtf_switch import experts as experts_lib
from mtf_switch import packed_experts, routing, settings
from mtf_switch import summaries as summaries_lib

EXPERTS_DIM_NAME = "experts"
TOKENS_DIM_NAME = "tokens_per_group"
CAPACITY_DIM_NAME = "expert_capacity"
MAX_PER_EXPERT_SUMMARIES = 128

configurable = settings.configurable

# The router settings a layer still accepts itself (the keywords from before routers were
# components): layer keyword -> the router's keyword. Given without ``router=``, they build
# the layer's default router; given beside ``router=``, they would be ignored, so that is
# an error.
ROUTER_KEYWORDS = {
    "router_policy_train": "policy_train",
    "router_policy_eval": "policy_eval",
    "jitter_eps": "jitter_eps",
    "router_input_dropout_rate": "input_dropout_rate",
    "sample_temperature": "sample_temperature",
    "router_dtype": "dtype",
}


def build_router(router: Optional[routing.Router], default_class, init_scale: float,
                 **keywords) -> routing.Router:
  """The layer's router: ``router`` itself, or ``default_class`` built from old keywords.

  Args:
    router: a Router instance, or None.
    default_class: the Router class to build when ``router`` is None.
    init_scale: the layer's init_scale, which the built router shares (as before routers
      were components); a given router keeps its own.
    **keywords: layer keyword -> value (None = not set); names in ROUTER_KEYWORDS are
      renamed to the router's names, others (num_overflow_choices, second_policy_train,
      ...) passed as they are.
  """
  given = {name: value for name, value in keywords.items() if value is not None}
  if router is None:
    return default_class(init_scale=init_scale,
                         **{ROUTER_KEYWORDS.get(name, name): v for name, v in given.items()})
  if not isinstance(router, routing.Router):
    raise ValueError(f"router must be a mtf_switch Router (e.g. @mtf_switch.SwitchRouter()), "
                     f"got {router!r}")
  if given:
    name, value = sorted(given.items())[0]
    raise ValueError(
        f"{name}={value!r} is a router setting, but a router is given ({type(router).__name__}),"
        f" which would ignore it: set {type(router).__name__}."
        f"{ROUTER_KEYWORDS.get(name, name)} instead")
  return router


def _has_mesh_dim(layout, mesh_shape, dim: mtf.Dimension) -> bool:
  """Whether the layout puts ``dim`` on a mesh dimension (of any size, 1 included)."""
  rules = mtf.convert_to_layout_rules(layout)
  return rules.tensor_dimension_to_mesh_axis(dim, mtf.convert_to_shape(mesh_shape)) is not None


@dataclasses.dataclass
class SparseFFNOutput:
  """What one application of the layer produced.

  Attributes:
    outputs: same shape and dtype as the layer input.
    aux_loss: float32 scalar added to the training loss (coefficients applied).
    routing: the router's RoutingResult (choices, unscaled losses, statistics).
    group_plan: the static groups; expert_capacity: the static slots per expert per group.
    dispatch_plan: the path the tokens took (``dispatch.DispatchPlan``).
  """

  outputs: mtf.Tensor
  aux_loss: mtf.Tensor
  routing: routing.RoutingResult
  group_plan: capacity_lib.GroupPlan
  expert_capacity: int
  dispatch_plan: dispatch_lib.DispatchPlan


@dataclasses.dataclass(frozen=True)
class _Dims:
  """The static dimensions of one application (see the module docstring's flow)."""

  groups: mtf.Dimension
  tokens: mtf.Dimension
  experts: mtf.Dimension
  capacity: mtf.Dimension


OUTER_BATCH_DIM_NAME = "outer_batch"


def grouping_dim(token_dims) -> mtf.Dimension:
  """The token dimension whose name (and so whose mesh split) the routing groups take.

  The first one, except for Mesh-TF's ``outer_batch`` of size 1: ``tpu_estimator_model_fn``
  gives every feature a leading [outer_batch=1] dimension by default (its
  ``outer_batch_size``), which no layout splits; grouping over it would put every group on
  every core, so the expert re-split would be an all-gather instead of the paper's all-to-all
  (the outputs are the same). The batch dimension after it is the one data parallelism splits.
  """
  first = token_dims[0]
  if first.name == OUTER_BATCH_DIM_NAME and first.size == 1 and len(token_dims) > 1:
    return token_dims[1]
  return first


class _RoutedExperts(transformer.TransformerLayer):
  """Groups, capacity, routing, dispatch and combine around a pluggable expert computation.

  Subclasses choose the default router (``_default_router``) and what the experts compute
  (``_expert_computation``).
  """

  _default_router = routing.SwitchRouter

  def __init__(self,
               num_experts: int = 8,
               group_size: int = 1024,
               capacity_factor_train: float = 1.25,
               capacity_factor_eval: float = 2.0,
               min_expert_capacity: int = 4,
               load_balance_loss_coef: float = 1e-2,
               z_loss_coef: float = 0.0,
               router: Optional[routing.Router] = None,
               router_policy_train: Optional[str] = None,
               router_policy_eval: Optional[str] = None,
               jitter_eps: Optional[float] = None,
               router_input_dropout_rate: Optional[float] = None,
               sample_temperature: Optional[float] = None,
               init_scale: float = 0.1,
               router_dtype: Optional[str] = None,
               summaries: bool = True,
               dispatch_path: str = "auto",
               skip_empty_slots: Union[bool, str] = "auto",
               batch_expert_slots: bool = True,
               fixed_expert_capacity: Optional[int] = None,
               **router_keywords):
    """Configures the layer; every value is checked here, before any TensorFlow op.

    Args:
      num_experts: experts in the layer (N in eq. 4).
      group_size: the largest routing group; capacity is per group.
      capacity_factor_train: capacity factor while training (paper: 1.0 or 1.25).
      capacity_factor_eval: capacity factor in evaluation and inference.
      min_expert_capacity: floor on slots per expert per group.
      load_balance_loss_coef: alpha of eq. 4 (paper: 0.01).
      z_loss_coef: router z-loss coefficient (ST-MoE; 0 = off, the paper's setting).
      router: the router component (``@mtf_switch.SwitchRouter()``, ``@mtf_switch.MoERouter()``);
        None builds the layer's default router from the keywords below (gin bindings of
        that router class, e.g. ``mtf_switch.SwitchRouter.policy_train``, fill in the
        settings the layer keywords leave unset).
      router_policy_train, router_policy_eval, jitter_eps, router_input_dropout_rate,
        sample_temperature, router_dtype: the default router's settings (``routing.Router``'s
        policy_train, policy_eval, jitter_eps, input_dropout_rate, sample_temperature,
        dtype); None = the router's default. An error beside ``router``.
      init_scale: s of the truncated-normal init sigma = sqrt(s / fan_in) of the expert
        weights and, when the layer builds its router, the router weight (paper: 0.1).
      summaries: write per-layer TensorBoard scalars while training.
      dispatch_path: "auto", "einsum" or "gather" (see the module docstring).
      skip_empty_slots: on the gather path, outside TPU computations, run the expert FFN on
        the filled capacity slots only (``packed_experts``) when each device holds whole
        d_model and d_ff rows; the same results, fewer FLOPs below full capacity. True or
        False; "auto" (the default) packs only experts large enough for it to pay
        (``packed_experts.packing_pays``): small experts run faster on every slot (see
        batch_expert_slots) than as the packed FFN's many small matmuls.
      batch_expert_slots: outside TPU computations, where the packed FFN is not used but the
        layout would allow it, run the expert FFN on every slot as batched matmuls over each
        device's slots (``packed_experts.batched_expert_ffn``; the same results, plain
        matmuls where Mesh-TF's einsums transpose). False keeps Mesh-TF's einsums.
      fixed_expert_capacity: None (capacity from the capacity factors), or an absolute number
        of slots per expert per group, used in training and evaluation alike (Hugging Face's
        ``expert_capacity``; with ``group_size`` = the sequence length it is HF's routing).
      **router_keywords: the default router's own settings (num_overflow_choices,
        second_policy_*, ...), as the subclass names them.
    """
    self.num_experts = settings.positive_int("num_experts", num_experts)
    self.group_size = settings.positive_int("group_size", group_size)
    # Both factors are checked now, so an eval-only typo cannot survive a long training run.
    self.capacity_factor_train = capacity_lib.check_capacity_factor(
        "capacity_factor_train", capacity_factor_train)
    self.capacity_factor_eval = capacity_lib.check_capacity_factor(
        "capacity_factor_eval", capacity_factor_eval)
    self.min_expert_capacity = settings.positive_int("min_expert_capacity",
                                                     min_expert_capacity)
    self.fixed_expert_capacity = (
        None if fixed_expert_capacity is None
        else settings.positive_int("fixed_expert_capacity", fixed_expert_capacity))
    self.load_balance_loss_coef = settings.nonnegative_number("load_balance_loss_coef",
                                                              load_balance_loss_coef)
    self.z_loss_coef = settings.nonnegative_number("z_loss_coef", z_loss_coef)
    self.init_scale = settings.positive_number("init_scale", init_scale)
    self.summaries = settings.boolean("summaries", summaries)
    dispatch_lib.check_path(dispatch_path)
    self.dispatch_path = dispatch_path
    self.skip_empty_slots = settings.boolean_or_auto("skip_empty_slots", skip_empty_slots)
    self.batch_expert_slots = settings.boolean("batch_expert_slots", batch_expert_slots)
    self.router = build_router(
        router, self._default_router, self.init_scale,
        router_policy_train=router_policy_train, router_policy_eval=router_policy_eval,
        jitter_eps=jitter_eps, router_input_dropout_rate=router_input_dropout_rate,
        sample_temperature=sample_temperature, router_dtype=router_dtype, **router_keywords)
    self.router.check_num_experts(self.num_experts)

  # --- what subclasses provide ---------------------------------------------------------

  def _expert_computation(self, expert_inputs, experts_dim, train, variable_dtype,
                          filled_slots=None, batched=False, expected_fill=1.0):
    """[experts, groups, capacity, d_model] -> [experts, groups, capacity, out_dim].

    filled_slots: None, or [experts, groups] filled-slot counts; when given, the computation
    may skip the empty slots (whose outputs must then be zero).
    batched: the plan allows each device's slots to run as one batch of rows
      (``DispatchPlan.batched_experts``); experts that cannot pack never see it set.
    expected_fill: the fraction of its slots an expert fills under balanced routing, for
      sizing the computation's kernels (no value may depend on it).
    """
    raise NotImplementedError

  def _experts_can_pack(self, layout, mesh_shape) -> bool:
    """Whether the experts have a filled-slots-only variant that this layout allows."""
    del layout, mesh_shape
    return False

  def _skips_empty_slots(self, model_dim: mtf.Dimension) -> bool:
    """skip_empty_slots resolved: "auto" asks the experts whether packing pays."""
    if self.skip_empty_slots == "auto":
      return self._packing_pays(model_dim)
    return self.skip_empty_slots

  def _packing_pays(self, model_dim: mtf.Dimension) -> bool:
    del model_dim
    return True

  def _check_layout(self, layout, mesh_shape) -> None:
    """Raises ValueError if an expert dimension does not divide its mesh dimension."""
    experts_split = mtf.tensor_dim_to_mesh_dim_size(
        layout, mesh_shape, mtf.Dimension(EXPERTS_DIM_NAME, self.num_experts))
    if self.num_experts % experts_split:
      raise ValueError(
          f"num_experts={self.num_experts} is not divisible by the {experts_split} devices of "
          f"the mesh dimension that the layout puts '{EXPERTS_DIM_NAME}' on")

  # --- the layer -----------------------------------------------------------------------

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

  def expert_capacity(self, tokens_per_group: int, train: bool) -> int:
    """Slots per expert per group: the one place the layer sizes its capacity."""
    if self.fixed_expert_capacity is not None:
      # More slots than tokens can never be filled; the cap changes no routing decision.
      return min(self.fixed_expert_capacity, tokens_per_group)
    factor = self.capacity_factor_train if train else self.capacity_factor_eval
    return capacity_lib.expert_capacity(tokens_per_group, self.num_experts, factor,
                                        self.min_expert_capacity)

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
        they split evenly, to check that experts fit their mesh dimension, and to plan the
        dispatch.
      nonpadding: None, 1, or a float Tensor over x's token dims (1 = real token).
      num_microbatches: the loss is divided by this, as Mesh-TF sums it per microbatch.

    Returns:
      SparseFFNOutput; outputs are [x's token dims..., out_dim] (out_dim = d_model for FFNs).
    """
    layout, mesh_shape = layout or "", mesh_shape or ""
    token_dims = x.shape.dims[:-1]
    group_plan, dims, plan = self._plan(x, train, layout, mesh_shape)
    grouped = mtf.reshape(x, [dims.groups, dims.tokens, x.shape.dims[-1]])
    token_mask = routing.token_mask_from_nonpadding(nonpadding, mtf.Shape(token_dims), x.mesh)
    token_mask = mtf.reshape(token_mask, [dims.groups, dims.tokens])
    route = self.router(grouped, token_mask, dispatch_lib.unsplit_dim(dims.experts),
                        dims.capacity, train, variable_dtype)
    run_path = self._einsum_path if plan.path == "einsum" else self._gather_path
    outputs = run_path(grouped, route, dims, plan, train, variable_dtype)
    outputs = mtf.reshape(outputs, token_dims + outputs.shape.dims[-1:])
    aux_loss = self._aux_loss(route, num_microbatches)
    if train and self.summaries:
      self._write_summaries(route, aux_loss)
    # Mesh-TF sums losses in the activation dtype.
    return SparseFFNOutput(outputs=outputs, aux_loss=mtf.cast(aux_loss, x.dtype),
                           routing=route, group_plan=group_plan,
                           expert_capacity=dims.capacity.size, dispatch_plan=plan)

  def _plan(self, x, train, layout, mesh_shape):
    """(GroupPlan, _Dims, DispatchPlan): the static sizes and the path, before any op, so a
    bad size or layout fails with nothing built."""
    token_dims, model_dim = x.shape.dims[:-1], x.shape.dims[-1]
    group_source = grouping_dim(token_dims)
    groups_split = mtf.tensor_dim_to_mesh_dim_size(layout, mesh_shape, group_source)
    group_plan = capacity_lib.plan_groups(mtf.Shape(token_dims).size, self.group_size,
                                          groups_split)
    self._check_layout(layout, mesh_shape)
    dims = _Dims(
        groups=mtf.Dimension(group_source.name, group_plan.num_groups),
        tokens=mtf.Dimension(TOKENS_DIM_NAME, group_plan.tokens_per_group),
        experts=mtf.Dimension(EXPERTS_DIM_NAME, self.num_experts),
        capacity=mtf.Dimension(CAPACITY_DIM_NAME,
                               self.expert_capacity(group_plan.tokens_per_group, train)))
    plan = dispatch_lib.plan_dispatch(
        self.dispatch_path,
        model_split=mtf.tensor_dim_to_mesh_dim_size(layout, mesh_shape, model_dim),
        groups_split=groups_split,
        # Any mesh dimension counts, even one of size 1 (cpu_data_parallel.gin's "batch:1"
        # with "experts:batch"): it splits nothing, but Mesh-TF still forbids two tensor
        # dimensions on it, and without the all-to-all the experts and groups would share it.
        experts_are_split=_has_mesh_dim(layout, mesh_shape, dims.experts),
        experts_can_pack=self._experts_can_pack(layout, mesh_shape),
        skip_empty_slots=self._skips_empty_slots(model_dim),
        batch_expert_slots=self.batch_expert_slots, model_dim_name=model_dim.name)
    return group_plan, dims, plan

  def _einsum_path(self, grouped, route, dims, plan, train, variable_dtype):
    """The paper's one-hot path: (1) route (done: ``route.choices``), (2) dispatch by einsum
    with the [groups, tokens, experts, capacity] dispatch mask built from the choices,
    (3) run the experts on every slot, (4) combine by einsum with the gate-valued combine
    weights. [groups, tokens, d_model] -> [groups, tokens, out_dim]."""
    dtype = grouped.dtype
    expert_inputs = dispatch_lib.dispatch(grouped, dispatch_lib.dispatch_mask(route, dtype),
                                          dims.experts, plan.experts_are_split)
    expert_outputs = self._expert_computation(expert_inputs, dims.experts, train,
                                              variable_dtype, batched=plan.batched_experts)
    return dispatch_lib.combine(expert_outputs, dispatch_lib.combine_weights(route, dtype),
                                dims.groups, plan.experts_are_split)

  def _gather_path(self, grouped, route, dims, plan, train, variable_dtype):
    """The by-index path: (1) route (done: ``route.choices``), (2) dispatch: each slot copies
    its token's row, (3) run the experts, on the filled slots only if ``plan.packed_experts``,
    (4) combine: each token gathers its slots' outputs, gate-weighted.
    [groups, tokens, d_model] -> [groups, tokens, out_dim]."""
    expert_inputs = dispatch_lib.gather_dispatch(grouped, route.choices, dims.experts,
                                                 dims.capacity, plan.experts_are_split)
    filled = (dispatch_lib.filled_slots(route, dims.experts, dims.groups,
                                        plan.experts_are_split)
              if plan.packed_experts else None)
    # Under balanced routing each expert fills this fraction of its slots.
    expected_fill = min(1.0, dims.tokens.size * len(route.choices)
                        / (dims.experts.size * dims.capacity.size))
    expert_outputs = self._expert_computation(expert_inputs, dims.experts, train,
                                              variable_dtype, filled_slots=filled,
                                              batched=plan.batched_experts,
                                              expected_fill=expected_fill)
    return dispatch_lib.gather_combine(expert_outputs, route.choices, dims.groups,
                                       dims.tokens, plan.experts_are_split)

  def _aux_loss(self, route: routing.RoutingResult, num_microbatches) -> mtf.Tensor:
    """alpha * load-balance loss (+ z-loss coefficient * z-loss), per microbatch."""
    aux_loss = self.load_balance_loss_coef * route.load_balance_loss
    if self.z_loss_coef:
      aux_loss += self.z_loss_coef * route.z_loss
    if num_microbatches and num_microbatches > 1:
      aux_loss /= float(num_microbatches)
    return aux_loss

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
    self.hidden_size = settings.positive_int("hidden_size", hidden_size)
    experts_lib.check_activation(activation)
    self.activation = activation
    self.expert_dropout_rate = settings.rate("expert_dropout_rate", expert_dropout_rate)

  def _check_layout(self, layout, mesh_shape) -> None:
    super()._check_layout(layout, mesh_shape)
    hidden_split = mtf.tensor_dim_to_mesh_dim_size(
        layout, mesh_shape, mtf.Dimension(experts_lib.HIDDEN_DIM_NAME, self.hidden_size))
    if self.hidden_size % hidden_split:
      raise ValueError(
          f"hidden_size={self.hidden_size} is not divisible by the {hidden_split} devices of "
          f"the mesh dimension that the layout puts '{experts_lib.HIDDEN_DIM_NAME}' on")

  def _packing_pays(self, model_dim: mtf.Dimension) -> bool:
    return packed_experts.packing_pays(model_dim.size, self.hidden_size)

  def _experts_can_pack(self, layout, mesh_shape) -> bool:
    # The packed FFN multiplies whole expert_hidden rows on each device.
    hidden_dim = mtf.Dimension(experts_lib.HIDDEN_DIM_NAME, self.hidden_size)
    return mtf.tensor_dim_to_mesh_dim_size(layout, mesh_shape, hidden_dim) == 1

  def _expert_computation(self, expert_inputs, experts_dim, train, variable_dtype,
                          filled_slots=None, batched=False, expected_fill=1.0):
    if filled_slots is not None:
      return packed_experts.packed_expert_ffn(
          expert_inputs, filled_slots, experts_dim, self.hidden_size, self.activation,
          self.expert_dropout_rate, train, variable_dtype, self.init_scale, expected_fill)
    if batched:
      return packed_experts.batched_expert_ffn(
          expert_inputs, experts_dim, self.hidden_size, self.activation,
          self.expert_dropout_rate, train, variable_dtype, self.init_scale)
    return experts_lib.expert_ffn(
        expert_inputs, experts_dim, self.hidden_size, self.activation,
        self.expert_dropout_rate, train, variable_dtype, self.init_scale)


@configurable
class SwitchFFN(_ExpertsFFN):
  """The Switch Transformer FFN layer: top-1 routing over ``num_experts`` experts.

  The default router is ``routing.SwitchRouter``; ``num_overflow_choices = k > 0`` (a
  SwitchRouter setting kept on the layer) turns on No-Token-Left-Behind (App. B). All other
  arguments: see ``_ExpertsFFN.__init__`` and ``_RoutedExperts.__init__``.
  """

  def __init__(self, num_overflow_choices: Optional[int] = None, **kwargs):
    super().__init__(num_overflow_choices=num_overflow_choices, **kwargs)


@configurable
class MoEFFN(_ExpertsFFN):
  """Top-2 mixture-of-experts FFN (the paper's MoE baseline in Table 1).

  The default router is ``routing.MoERouter``, whose settings the layer still accepts:
    second_policy_train / second_policy_eval: when the second expert is used: "all",
      "none", "threshold" or "random" (GShard's choice for training). Evaluation defaults
      to "all" so that it is deterministic.
    second_threshold: the threshold of the "threshold" and "random" policies, in (0, 1].
  Its router_policy_train defaults to "argmax".
  """

  _default_router = routing.MoERouter

  def __init__(self, second_policy_train: Optional[str] = None,
               second_policy_eval: Optional[str] = None,
               second_threshold: Optional[float] = None, **kwargs):
    super().__init__(second_policy_train=second_policy_train,
                     second_policy_eval=second_policy_eval,
                     second_threshold=second_threshold, **kwargs)
