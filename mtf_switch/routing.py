"""Routers: which expert (and which capacity slot) each token goes to, and with what weight.

A router sees only the grouped token representations and the experts dimension; it knows
nothing about what the experts compute. Every router returns one ``RoutingResult``:

  choices          per token and per choice (1 for Switch and No-Token-Left-Behind, 2 for
                   top-2): expert index, capacity slot, kept flag and gate, each a small
                   float32 [groups, tokens_per_group] tensor (``TokenChoice``)
  dispatch_mask    [groups, tokens_per_group, experts, expert_capacity]  0/1, activation dtype
  combine_weights  [groups, tokens_per_group, experts, expert_capacity]  gate, activation dtype
  load_balance_loss, z_loss   unscaled float32 scalars (the layer applies the coefficients)
  statistics       expert load, dropped fraction, router entropy (float32)

The routing decision is made once, in the choices; the two [g, t, e, c] tensors are derived
from them only when something reads them (the einsum dispatch path), so the gather path never
builds them and both paths route identically by construction.

Selective precision (paper Section 2.4): the router input is cast to float32 and the logits,
softmax, top-1, cumulative positions and losses all stay float32 whatever the activation dtype.
Only the two [g, t, e, c] tensors are built in the activation dtype, from small float32
factors, so no float32 copy of the big tensors exists under bfloat16.

``RouterConfig.dtype = "bfloat16"`` turns selective precision off, for Table 2's "bfloat16
everywhere" row: the router input, W_r x and the softmax are then computed in bfloat16, and
only the bfloat16 probabilities are widened for the bookkeeping that follows. Token counting
(slot positions) stays exact in float32 either way: bfloat16 cannot count past 256, which
would misplace tokens in large groups, a different failure from the one the paper measures.

Routers provided (names as the paper uses them):
  * ``route_top1``   the Switch router (eq. 1-2), with the App. C exploration policies and
                     optional No-Token-Left-Behind re-routing of overflow (App. B).
  * ``route_top2``   the top-2 MoE router of Shazeer et al. 2017 / GShard (Table 1 baseline).
"""

import dataclasses
import functools
from typing import Optional, Tuple

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

POLICIES = ("argmax", "sample", "input_dropout", "input_jitter")
ROUTER_DTYPES = ("float32", "bfloat16")
SECOND_EXPERT_POLICIES = ("all", "none", "threshold", "random")


@dataclasses.dataclass(frozen=True)
class RouterConfig:
  """How a router explores (App. C) and how its weights start.

  Attributes:
    policy_train: one of POLICIES, used while training. "input_jitter" multiplies the router
      input by U(1 - jitter_eps, 1 + jitter_eps) (the paper's default); "input_dropout" drops
      router inputs; "sample" draws the expert from softmax(logits / temperature); "argmax"
      is deterministic.
    policy_eval: the same for evaluation. Jitter and dropout are training-only perturbations,
      so in evaluation they act as "argmax".
    jitter_eps: half-width of the multiplicative jitter.
    input_dropout_rate: dropout rate of the "input_dropout" policy.
    sample_temperature: temperature of the "sample" policy.
    init_scale: s in the truncated-normal init sigma = sqrt(s / fan_in) (paper: 0.1).
    dtype: what the router computes W_r x and its softmax in: "float32" (selective
      precision, the paper's choice) or "bfloat16" (Table 2's unstable baseline).
  """

  policy_train: str = "input_jitter"
  policy_eval: str = "argmax"
  jitter_eps: float = 1e-2
  input_dropout_rate: float = 0.1
  sample_temperature: float = 1.0
  init_scale: float = 0.1
  dtype: str = "float32"

  def __post_init__(self):
    for name in ("policy_train", "policy_eval"):
      value = getattr(self, name)
      if value not in POLICIES:
        raise ValueError(f"unknown router {name}={value!r}; expected one of {POLICIES}")
    if not 0.0 <= self.jitter_eps < 1.0:
      raise ValueError(f"jitter_eps must be in [0, 1), got {self.jitter_eps!r}")
    if not 0.0 <= self.input_dropout_rate < 1.0:
      raise ValueError(
          f"input_dropout_rate must be in [0, 1), got {self.input_dropout_rate!r}")
    if not self.sample_temperature > 0.0:
      raise ValueError(f"sample_temperature must be > 0, got {self.sample_temperature!r}")
    if not self.init_scale > 0.0:
      raise ValueError(f"router init_scale must be > 0, got {self.init_scale!r}")
    if self.dtype not in ROUTER_DTYPES:
      raise ValueError(f"unknown router_dtype={self.dtype!r}; expected one of {ROUTER_DTYPES}")

  def policy(self, train: bool) -> str:
    return self.policy_train if train else self.policy_eval


@dataclasses.dataclass
class RoutingStatistics:
  """Float32 summaries of one routing decision, for TensorBoard and tests.

  Attributes:
    expert_fraction: [experts], fraction of real (non-padding) tokens whose first choice is
      each expert, before capacity is applied: the expert load.
    dropped_fraction: scalar, fraction of real tokens that no expert processes.
    router_entropy: scalar, mean entropy (nats) of the router distribution over real tokens.
  """

  expert_fraction: mtf.Tensor
  dropped_fraction: mtf.Tensor
  router_entropy: mtf.Tensor


@dataclasses.dataclass(frozen=True)
class TokenChoice:
  """One expert choice of every token, after capacity: routing in its small form.

  All four are float32 [groups, tokens_per_group]; the indices are exact small integers.

  Attributes:
    expert: index of the chosen expert.
    slot: position in that expert's capacity (0 where the token is not kept). The kept
      tokens of an expert fill slots 0, 1, ... of each group in order, so the filled slots
      of every (group, expert) are a prefix of the capacity.
    kept: 1 where the token holds the slot; 0 for a dropped token, padding, or an unused
      second choice.
    gate: the combine weight, zero where not kept.
  """

  expert: mtf.Tensor
  slot: mtf.Tensor
  kept: mtf.Tensor
  gate: mtf.Tensor


@dataclasses.dataclass
class RoutingResult:
  """What a router decided; shapes in the module docstring.

  ``dispatch_mask`` and ``combine_weights`` are built from ``choices`` on first access, in
  ``dtype``, and cached.
  """

  choices: Tuple[TokenChoice, ...]
  experts_dim: mtf.Dimension
  expert_capacity_dim: mtf.Dimension
  dtype: tf.DType
  load_balance_loss: mtf.Tensor
  z_loss: mtf.Tensor
  statistics: RoutingStatistics

  @functools.cached_property
  def dispatch_mask(self) -> mtf.Tensor:
    """[groups, tokens_per_group, experts, expert_capacity] 0/1 in the activation dtype."""
    return self._slot_tensor(lambda choice: choice.kept)

  @functools.cached_property
  def combine_weights(self) -> mtf.Tensor:
    """[groups, tokens_per_group, experts, expert_capacity] gates in the activation dtype."""
    return self._slot_tensor(lambda choice: choice.gate)

  def _slot_tensor(self, value_of) -> mtf.Tensor:
    total = None
    for choice in self.choices:
      placed = _slot_tensor(value_of(choice), choice.expert, choice.slot, self.experts_dim,
                            self.expert_capacity_dim, self.dtype)
      total = placed if total is None else total + placed
    return total

  def filled_slots(self) -> mtf.Tensor:
    """[groups, experts] float32: how many slots of each expert each group fills."""
    total = None
    for choice in self.choices:
      per_token = mtf.one_hot(mtf.to_int32(choice.expert), self.experts_dim,
                              dtype=tf.float32) * choice.kept
      count = mtf.reduce_sum(per_token, reduced_dim=per_token.shape.dims[1])
      total = count if total is None else total + count
    return total


def router_logits(inputs: mtf.Tensor, experts_dim: mtf.Dimension, config: RouterConfig,
                  train: bool, variable_dtype: mtf.VariableDType,
                  name: str = "router") -> mtf.Tensor:
  """The router's logits W_r x, after the exploration perturbation of the input.

  Args:
    inputs: [groups, tokens_per_group, d_model], any float dtype.
    experts_dim: the experts dimension of the output.
    config: the router's configuration.
    train: whether this is a training graph.
    variable_dtype: storage dtypes of the router weight; the product runs in config.dtype.
    name: variable scope of the router weight (``<name>/kernel``, [d_model, experts]).

  Returns:
    [groups, tokens_per_group, experts] logits in config.dtype (float32 by default).
  """
  router_inputs = mtf.cast(inputs, tf.as_dtype(config.dtype))
  policy = config.policy(train)
  if train and policy == "input_jitter":
    router_inputs = mtf.layers.multiplicative_jitter(router_inputs, config.jitter_eps)
  elif train and policy == "input_dropout":
    router_inputs = mtf.dropout(router_inputs, is_training=True,
                                keep_prob=1.0 - config.input_dropout_rate)
  return mtf.layers.dense(
      router_inputs, experts_dim, reduced_dims=router_inputs.shape.dims[-1:],
      use_bias=False, variable_dtype=variable_dtype,
      kernel_initializer=mtf.layers.VarianceScalingInitializer(scale=config.init_scale),
      name=name)


def router_probabilities(inputs: mtf.Tensor, experts_dim: mtf.Dimension, config: RouterConfig,
                         train: bool, variable_dtype: mtf.VariableDType,
                         name: str = "router") -> Tuple[mtf.Tensor, mtf.Tensor]:
  """(logits, softmax probabilities), each [groups, tokens_per_group, experts] float32.

  Both are computed in config.dtype and only then widened, so under ``dtype="bfloat16"``
  every value carries bfloat16's rounding while the bookkeeping downstream stays float32.
  """
  logits = router_logits(inputs, experts_dim, config, train, variable_dtype, name=name)
  probs = mtf.softmax(logits, reduced_dim=experts_dim)
  return mtf.to_float(logits), mtf.to_float(probs)


def exclusive_cumsum(x: mtf.Tensor, dim: mtf.Dimension) -> mtf.Tensor:
  """Exclusive cumulative sum of x along dim, which must not be split over the mesh.

  mtf.cumsum multiplies by a [dim, dim] triangular matrix, O(dim^2) work per row; the routing
  masks only ever need a running count along the (never split) tokens_per_group dimension, so
  a slice-wise tf.cumsum is exact and linear. No gradient flows through routing masks.
  """
  axis = x.shape.dims.index(dim)
  return mtf.slicewise(
      lambda t: tf.math.cumsum(t, axis=axis, exclusive=True), [x],
      output_shape=x.shape, output_dtype=x.dtype,
      splittable_dims=[d for d in x.shape.dims if d != dim], name="exclusive_cumsum")


def load_balancing_loss(router_probs: mtf.Tensor, expert_mask: mtf.Tensor,
                        token_mask: mtf.Tensor, tokens_dim: mtf.Dimension,
                        experts_dim: mtf.Dimension) -> mtf.Tensor:
  """Paper eq. 4-6: N * sum_i f_i * P_i, computed per group and averaged over groups.

  f_i is the fraction of the group's real tokens whose top-1 choice is expert i, P_i the mean
  router probability of expert i over the same tokens. Padding tokens count in neither.
  (moe.py counts padding tokens in f_i and scales the loss by the fraction of real tokens; the
  two agree when there is no padding.) Uniform routing gives exactly 1.

  Args:
    router_probs: [groups, tokens, experts] float32.
    expert_mask: [groups, tokens, experts] one-hot top-1 choice, zero on padding.
    token_mask: [groups, tokens], 1 for real tokens and 0 for padding.
    tokens_dim, experts_dim: the dimensions to reduce.

  Returns:
    float32 scalar.
  """
  real_tokens = mtf.maximum(mtf.reduce_sum(token_mask, reduced_dim=tokens_dim), 1.0)
  fraction_routed = mtf.reduce_sum(expert_mask, reduced_dim=tokens_dim) / real_tokens
  mean_prob = mtf.reduce_sum(router_probs * token_mask, reduced_dim=tokens_dim) / real_tokens
  per_group = mtf.reduce_sum(fraction_routed * mean_prob, reduced_dim=experts_dim)
  return mtf.reduce_mean(per_group) * float(experts_dim.size)


def router_z_loss(logits: mtf.Tensor, token_mask: mtf.Tensor,
                  experts_dim: mtf.Dimension) -> mtf.Tensor:
  """ST-MoE (Zoph et al. 2022) z-loss: mean over real tokens of logsumexp(logits)^2."""
  log_z = mtf.reduce_logsumexp(logits, experts_dim)
  real_tokens = mtf.maximum(mtf.reduce_sum(token_mask), 1.0)
  return mtf.reduce_sum(mtf.square(log_z) * token_mask) / real_tokens


def _statistics(router_probs, first_choice_mask, routed_tokens, token_mask,
                experts_dim) -> RoutingStatistics:
  """Statistics from float32 [g, t, e] probs and first-choice mask and [g, t] routed flags."""
  real_tokens = mtf.maximum(mtf.reduce_sum(token_mask), 1.0)
  expert_fraction = mtf.reduce_sum(first_choice_mask, output_shape=[experts_dim]) / real_tokens
  dropped_fraction = 1.0 - mtf.reduce_sum(mtf.minimum(routed_tokens, 1.0)) / real_tokens
  entropy = -mtf.reduce_sum(router_probs * mtf.log(router_probs + 1e-9), reduced_dim=experts_dim)
  router_entropy = mtf.reduce_sum(entropy * token_mask) / real_tokens
  return RoutingStatistics(expert_fraction, dropped_fraction, router_entropy)


def _slot_tensor(values: mtf.Tensor, expert: mtf.Tensor, slot: mtf.Tensor,
                 experts_dim: mtf.Dimension, expert_capacity_dim: mtf.Dimension,
                 dtype) -> mtf.Tensor:
  """[g, t] values placed at [g, t, e, c] (expert, slot), built directly in dtype.

  The float32 factor is only [g, t, e]; the [g, t, e, c] product exists once, in dtype.
  """
  per_expert = mtf.one_hot(mtf.to_int32(expert), experts_dim, dtype=tf.float32) * values
  return mtf.cast(per_expert, dtype) * mtf.one_hot(
      mtf.to_int32(slot), expert_capacity_dim, dtype=dtype)


def _token_choice(expert_index: mtf.Tensor, kept: mtf.Tensor, position: mtf.Tensor,
                  gate: mtf.Tensor, experts_dim: mtf.Dimension) -> TokenChoice:
  """Per-token form of one routing pass.

  Args:
    expert_index: [g, t] int32 chosen expert.
    kept: [g, t, e] float32, one-hot of the expert where the token got a slot.
    position: [g, t, e] float32, the token's position in its expert (zero elsewhere).
    gate: [g, t] float32 router probability of the chosen expert.
    experts_dim: the experts dimension to reduce.
  """
  kept_token = mtf.reduce_sum(kept, reduced_dim=experts_dim)
  return TokenChoice(
      expert=mtf.to_float(expert_index) * kept_token,
      slot=mtf.reduce_sum(position, reduced_dim=experts_dim) * kept_token,
      kept=kept_token,
      gate=gate * kept_token)


def _merge_exclusive_choices(first: TokenChoice, second: TokenChoice) -> TokenChoice:
  """One choice from two passes that never keep the same token (No-Token-Left-Behind)."""
  return TokenChoice(expert=first.expert + second.expert, slot=first.slot + second.slot,
                     kept=first.kept + second.kept, gate=first.gate + second.gate)


def _top1_choice(logits, router_probs, experts_dim, config, train):
  """(expert_index [g, t] int32, gate [g, t] float32) under the configured policy."""
  if config.policy(train) == "sample":
    expert_index = mtf.sample_with_temperature(
        logits, experts_dim, temperature=config.sample_temperature)
    gate = mtf.gather(router_probs, expert_index, dim=experts_dim)
    return expert_index, gate
  gate, expert_index = mtf.top_1(router_probs, reduced_dim=experts_dim)
  return expert_index, gate


def route_top1(inputs: mtf.Tensor, token_mask: mtf.Tensor, experts_dim: mtf.Dimension,
               expert_capacity_dim: mtf.Dimension, config: RouterConfig, train: bool,
               variable_dtype: mtf.VariableDType, num_overflow_choices: int = 0,
               name: str = "router") -> RoutingResult:
  """The Switch router: each token goes to its single best expert, weighted by its gate.

  Tokens take capacity slots in token order; a token whose expert is full is dropped (its
  dispatch and combine rows are zero, so the layer's residual carries it unchanged).

  With ``num_overflow_choices = k > 0`` this is No-Token-Left-Behind (App. B): tokens dropped
  by their first choice try their 2nd, ..., (k+1)-th choices in turn, each pass filling only
  capacity left over by the earlier passes. A re-routed token is weighted by the router
  probability of the expert that takes it. The load-balancing loss uses first choices only,
  as eq. 4 defines it (moe.py's NTLB averages f_i over all k choices).

  Args:
    inputs: [groups, tokens_per_group, d_model].
    token_mask: [groups, tokens_per_group] float32, 1 for real tokens, 0 for padding.
    experts_dim: [experts] dimension of the router output.
    expert_capacity_dim: slots per expert per group.
    config: exploration policy and init.
    train: whether this is a training graph.
    variable_dtype: storage dtypes for the router weight.
    num_overflow_choices: k extra choices for No-Token-Left-Behind; 0 is plain Switch.
    name: scope of the router weight.

  Returns:
    RoutingResult.
  """
  if num_overflow_choices < 0 or num_overflow_choices >= experts_dim.size:
    raise ValueError(
        f"num_overflow_choices={num_overflow_choices} must be in [0, num_experts - 1 = "
        f"{experts_dim.size - 1}]")
  tokens_dim = inputs.shape.dims[-2]
  dtype = inputs.dtype
  logits, router_probs = router_probabilities(inputs, experts_dim, config, train,
                                              variable_dtype, name=name)
  expert_index, gate = _top1_choice(logits, router_probs, experts_dim, config, train)

  first_choice = mtf.one_hot(expert_index, experts_dim, dtype=tf.float32) * token_mask
  balance_loss = load_balancing_loss(router_probs, first_choice, token_mask, tokens_dim,
                                     experts_dim)

  capacity = float(expert_capacity_dim.size)
  position = exclusive_cumsum(first_choice, tokens_dim) * first_choice
  kept = first_choice * mtf.to_float(mtf.less(position, capacity))
  choice = _token_choice(expert_index, kept, position, gate, experts_dim)
  routed = choice.kept

  if num_overflow_choices:
    # Rank the experts once; pass j routes still-unrouted tokens to their (j+1)-th choice.
    # A token is kept by at most one pass, so the passes merge into one choice per token.
    choices_dim = mtf.Dimension("router_choices", num_overflow_choices + 1)
    ranked_probs, ranked_index = mtf.top_k(router_probs, reduced_dim=experts_dim,
                                           k_dim=choices_dim)
    ranked_probs = mtf.split(ranked_probs, choices_dim, choices_dim.size)
    ranked_index = mtf.split(ranked_index, choices_dim, choices_dim.size)
    slots_used = mtf.reduce_sum(kept, reduced_dim=tokens_dim)
    for choice_probs, choice_index in zip(ranked_probs[1:], ranked_index[1:], strict=True):
      # Each split piece keeps a size-1 "router_choices" dimension; drop it.
      choice_probs = mtf.reshape(choice_probs, choice_probs.shape.dims[:-1])
      choice_index = mtf.reshape(choice_index, choice_index.shape.dims[:-1])
      waiting = token_mask * (1.0 - routed)
      wanted = mtf.one_hot(choice_index, experts_dim, dtype=tf.float32) * waiting
      position = (exclusive_cumsum(wanted, tokens_dim) + slots_used) * wanted
      kept_now = wanted * mtf.to_float(mtf.less(position, capacity))
      choice = _merge_exclusive_choices(
          choice, _token_choice(choice_index, kept_now, position, choice_probs, experts_dim))
      slots_used += mtf.reduce_sum(kept_now, reduced_dim=tokens_dim)
      routed = choice.kept

  return RoutingResult(
      choices=(choice,),
      experts_dim=experts_dim,
      expert_capacity_dim=expert_capacity_dim,
      dtype=dtype,
      load_balance_loss=balance_loss,
      z_loss=router_z_loss(logits, token_mask, experts_dim),
      statistics=_statistics(router_probs, first_choice, routed, token_mask, experts_dim))


def route_top2(inputs: mtf.Tensor, token_mask: mtf.Tensor, experts_dim: mtf.Dimension,
               expert_capacity_dim: mtf.Dimension, config: RouterConfig, train: bool,
               variable_dtype: mtf.VariableDType, second_policy: str = "random",
               second_threshold: float = 0.2, name: str = "router") -> RoutingResult:
  """Top-2 MoE routing: each token goes to its two best experts, gates renormalised to sum 1.

  All first choices take capacity before any second choice, so a second choice never displaces
  a first. The second expert is used always ("all"), never ("none"), when its renormalised
  gate exceeds ``second_threshold`` ("threshold"), or with probability
  min(1, gate_2 / second_threshold) ("random", as in GShard). Exploration policies other
  than "argmax" apply to the router input only; top-2 never samples.

  Shapes and returns as ``route_top1``.
  """
  if second_policy not in SECOND_EXPERT_POLICIES:
    raise ValueError(
        f"unknown second_policy={second_policy!r}; expected one of {SECOND_EXPERT_POLICIES}")
  if experts_dim.size < 2:
    raise ValueError(f"top-2 routing needs at least 2 experts, got num_experts={experts_dim.size}")
  tokens_dim = inputs.shape.dims[-2]
  dtype = inputs.dtype
  logits, router_probs = router_probabilities(inputs, experts_dim, config, train,
                                              variable_dtype, name=name)

  gate_1, index_1 = mtf.top_1(router_probs, reduced_dim=experts_dim)
  mask_1 = mtf.one_hot(index_1, experts_dim, dtype=tf.float32) * token_mask
  gate_2, index_2 = mtf.top_1(
      router_probs * (1.0 - mtf.one_hot(index_1, experts_dim, dtype=tf.float32)),
      reduced_dim=experts_dim)
  mask_2 = mtf.one_hot(index_2, experts_dim, dtype=tf.float32) * token_mask
  denominator = gate_1 + gate_2 + 1e-9
  gate_1 /= denominator
  gate_2 /= denominator
  balance_loss = load_balancing_loss(router_probs, mask_1, token_mask, tokens_dim, experts_dim)

  if second_policy == "none":
    mask_2 *= 0.0
  elif second_policy == "threshold":
    mask_2 *= mtf.to_float(mtf.greater(gate_2, second_threshold))
  elif second_policy == "random":
    coin = mtf.random_uniform(gate_2.mesh, gate_2.shape, dtype=tf.float32)
    mask_2 *= mtf.to_float(mtf.less(coin, gate_2 / max(second_threshold, 1e-9)))

  capacity = float(expert_capacity_dim.size)
  position_1 = exclusive_cumsum(mask_1, tokens_dim) * mask_1
  kept_1 = mask_1 * mtf.to_float(mtf.less(position_1, capacity))
  first_choice_slots = mtf.reduce_sum(kept_1, reduced_dim=tokens_dim)
  position_2 = (exclusive_cumsum(mask_2, tokens_dim) + first_choice_slots) * mask_2
  kept_2 = mask_2 * mtf.to_float(mtf.less(position_2, capacity))

  choices = (_token_choice(index_1, kept_1, position_1, gate_1, experts_dim),
             _token_choice(index_2, kept_2, position_2, gate_2, experts_dim))
  routed = choices[0].kept + choices[1].kept
  return RoutingResult(
      choices=choices,
      experts_dim=experts_dim,
      expert_capacity_dim=expert_capacity_dim,
      dtype=dtype,
      load_balance_loss=balance_loss,
      z_loss=router_z_loss(logits, token_mask, experts_dim),
      statistics=_statistics(router_probs, mask_1, routed, token_mask, experts_dim))


def token_mask_from_nonpadding(nonpadding: Optional[object], shape: mtf.Shape,
                               mesh: mtf.Mesh) -> mtf.Tensor:
  """A float32 [<token dims>] mask from Mesh-TF's context.nonpadding (None, 1 or a Tensor)."""
  ones = mtf.ones(mesh, shape, dtype=tf.float32)
  if nonpadding is None or isinstance(nonpadding, (int, float)):
    return ones
  # Mesh-TF marks real tokens 1.0; anything else (0, or fractional importances) is padding.
  return ones * mtf.to_float(mtf.equal(mtf.to_float(nonpadding), 1.0))
