"""Routers: which expert (and which capacity slot) each token goes to, and with what weight.

A router is a component the layer is given (``mtf_switch.SwitchFFN.router =
@mtf_switch.SwitchRouter()``), in the spirit of flaxformer's ``Router``. Calling it runs

  __call__
    -> _compute_router_probabilities   shared: exploration (jitter / dropout of the router
                                       input), W_r x, softmax; float32 (selective precision)
    -> _compute_routing_instructions   per router: which experts each token asks for, in
                                       order of preference (a list of ``Candidate`` passes)
    -> assign_slots                    shared: one top-k loop that gives each pass's tokens
                                       capacity slots in token order, after earlier passes
    -> losses and statistics           shared: load balance (eq. 4), z-loss, expert load

The routers differ only in the candidates they ask for:

  * ``SwitchRouter``                   top-1 (eq. 1-2) with the App. C exploration policies;
    ``num_overflow_choices = k``       No-Token-Left-Behind (App. B): k more passes, each for
                                       the tokens still unplaced, to their next-best expert.
  * ``MoERouter``                      top-2 of Shazeer et al. 2017 / GShard (Table 1's MoE
                                       baseline): a second pass to the second-best expert,
                                       subject to the second-expert policy.

Every router returns one ``RoutingResult``: the per-token ``choices`` (expert, slot, kept,
gate; float32 [groups, tokens_per_group] each), the unscaled losses and the statistics. The
[groups, tokens, experts, capacity] one-hot tensors of the einsum path are built from the
choices by ``dispatch``, never by the router, so the gather path never builds them and both
paths route identically by construction.

Selective precision (paper Section 2.4): the router input is cast to float32 and the logits,
softmax, top-1, cumulative positions and losses all stay float32 whatever the activation dtype.
``dtype="bfloat16"`` turns it off, for Table 2's "bfloat16 everywhere" row: the router input,
W_r x and the softmax are then computed in bfloat16, and only the bfloat16 probabilities are
widened for the bookkeeping that follows. Token counting (slot positions) stays exact in
float32 either way: bfloat16 cannot count past 256.
"""

import dataclasses
from typing import List, Optional, Sequence, Tuple

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

from mtf_switch import settings

POLICIES = ("argmax", "sample", "input_dropout", "input_jitter")
ROUTER_DTYPES = ("float32", "bfloat16")
SECOND_EXPERT_POLICIES = ("all", "none", "threshold", "random")


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

  def merged_with(self, other: "TokenChoice") -> "TokenChoice":
    """One choice from two passes that never keep the same token (No-Token-Left-Behind)."""
    return TokenChoice(expert=self.expert + other.expert, slot=self.slot + other.slot,
                       kept=self.kept + other.kept, gate=self.gate + other.gate)


@dataclasses.dataclass
class RoutingResult:
  """What a router decided.

  Attributes:
    choices: per-token choices (1 for Switch and NTLB, 2 for top-2), [groups, tokens] each.
    experts_dim, expert_capacity_dim: the dimensions the choices index.
    load_balance_loss, z_loss: unscaled float32 scalars (the layer applies coefficients).
    statistics: RoutingStatistics.
  """

  choices: Tuple[TokenChoice, ...]
  experts_dim: mtf.Dimension
  expert_capacity_dim: mtf.Dimension
  load_balance_loss: mtf.Tensor
  z_loss: mtf.Tensor
  statistics: RoutingStatistics


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One pass of the slot-filling loop: the expert each token asks for in this pass.

  Attributes:
    expert: [groups, tokens_per_group] int32 expert index.
    gate: [groups, tokens_per_group] float32 combine weight if the token gets the slot.
    asks: None (every real token asks), or [groups, tokens_per_group] float32, 1 where the
      token asks at all (top-2's second-expert policy).
  """

  expert: mtf.Tensor
  gate: mtf.Tensor
  asks: Optional[mtf.Tensor] = None


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


def _token_choice(expert_index: mtf.Tensor, kept: mtf.Tensor, position: mtf.Tensor,
                  gate: mtf.Tensor, experts_dim: mtf.Dimension) -> TokenChoice:
  """Per-token form of one pass, from [g, t, e] kept / position and [g, t] index / gate."""
  kept_token = mtf.reduce_sum(kept, reduced_dim=experts_dim)
  return TokenChoice(
      expert=mtf.to_float(expert_index) * kept_token,
      slot=mtf.reduce_sum(position, reduced_dim=experts_dim) * kept_token,
      kept=kept_token,
      gate=gate * kept_token)


def assign_slots(candidates: Sequence[Candidate], token_mask: mtf.Tensor,
                 experts_dim: mtf.Dimension, expert_capacity_dim: mtf.Dimension,
                 exclusive: bool) -> Tuple[TokenChoice, ...]:
  """The one top-k loop: each pass's tokens take free slots of their expert in token order.

  Pass j starts counting where passes 0 .. j-1 left each expert's slots, so a later choice
  never displaces an earlier one; a token over capacity is not kept.

  Args:
    candidates: the passes, in order of priority.
    token_mask: [groups, tokens_per_group] float32, 1 for real tokens.
    experts_dim, expert_capacity_dim: experts and slots per expert per group.
    exclusive: True (No-Token-Left-Behind): a pass is only for tokens no earlier pass kept,
      and all passes merge into one choice per token. False (top-k): every pass is a choice
      of its own.

  Returns:
    One TokenChoice if exclusive, else one per candidate.
  """
  tokens_dim = token_mask.shape.dims[-1]
  capacity = float(expert_capacity_dim.size)
  choices: List[TokenChoice] = []
  slots_used = None  # [groups, experts] slots taken by earlier passes
  for candidate in candidates:
    asks = token_mask if candidate.asks is None else token_mask * candidate.asks
    if exclusive and choices:
      asks = asks * (1.0 - choices[0].kept)
    wanted = mtf.one_hot(candidate.expert, experts_dim, dtype=tf.float32) * asks
    position = exclusive_cumsum(wanted, tokens_dim)
    if slots_used is not None:
      position += slots_used
    position *= wanted
    kept = wanted * mtf.to_float(mtf.less(position, capacity))
    choice = _token_choice(candidate.expert, kept, position, candidate.gate, experts_dim)
    if exclusive and choices:
      choices[0] = choices[0].merged_with(choice)
    else:
      choices.append(choice)
    taken = mtf.reduce_sum(kept, reduced_dim=tokens_dim)
    slots_used = taken if slots_used is None else slots_used + taken
  return tuple(choices)


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


class Router:
  """The shared part of every router; subclasses choose the experts (see module docstring).

  Args:
    policy_train: exploration while training, one of POLICIES: "input_jitter" multiplies the
      router input by U(1 - jitter_eps, 1 + jitter_eps) (App. C, the paper's choice);
      "input_dropout" drops router inputs; "sample" draws the first expert from
      softmax(logits / sample_temperature); "argmax" is deterministic.
    policy_eval: the same for evaluation; jitter and dropout are training-only, so in
      evaluation they act as "argmax".
    jitter_eps: half-width of the multiplicative jitter (paper: 0.01).
    input_dropout_rate: dropout rate of the "input_dropout" policy.
    sample_temperature: temperature of the "sample" policy.
    init_scale: s in the router weight's truncated-normal init sigma = sqrt(s / d_model).
    dtype: what W_r x and its softmax are computed in: "float32" (selective precision) or
      "bfloat16" (Table 2's unstable baseline).
  """

  # Whether a later candidate pass is only for the tokens earlier passes left unplaced (and
  # all passes merge into one choice per token), or a choice of its own (top-k).
  _exclusive_passes = True

  def __init__(self, policy_train: str = "input_jitter", policy_eval: str = "argmax",
               jitter_eps: float = 1e-2, input_dropout_rate: float = 0.1,
               sample_temperature: float = 1.0, init_scale: float = 0.1,
               dtype: str = "float32"):
    self.policy_train = settings.one_of("policy_train", policy_train, POLICIES,
                                        prefix="unknown router ")
    self.policy_eval = settings.one_of("policy_eval", policy_eval, POLICIES,
                                       prefix="unknown router ")
    self.jitter_eps = settings.rate("jitter_eps", jitter_eps)
    self.input_dropout_rate = settings.rate("input_dropout_rate", input_dropout_rate)
    self.sample_temperature = settings.positive_number("sample_temperature",
                                                       sample_temperature)
    self.init_scale = settings.positive_number("init_scale", init_scale)
    self.dtype = settings.one_of("router_dtype", dtype, ROUTER_DTYPES)

  def policy(self, train: bool) -> str:
    return self.policy_train if train else self.policy_eval

  def check_num_experts(self, num_experts: int) -> None:
    """Raises ValueError if this router cannot route over ``num_experts`` experts."""
    settings.positive_int("num_experts", num_experts)

  def __call__(self, inputs: mtf.Tensor, token_mask: mtf.Tensor, experts_dim: mtf.Dimension,
               expert_capacity_dim: mtf.Dimension, train: bool,
               variable_dtype: mtf.VariableDType, name: str = "router") -> RoutingResult:
    """Routes one grouped batch.

    Args:
      inputs: [groups, tokens_per_group, d_model], any float dtype.
      token_mask: [groups, tokens_per_group] float32, 1 for real tokens, 0 for padding.
      experts_dim: [experts] dimension of the router output (never split over the mesh).
      expert_capacity_dim: slots per expert per group.
      train: whether this is a training graph (exploration, random second experts).
      variable_dtype: storage dtypes of the router weight ``<name>/kernel`` [d_model, experts].
      name: variable scope of the router weight.

    Returns:
      RoutingResult.
    """
    self.check_num_experts(experts_dim.size)
    tokens_dim = inputs.shape.dims[-2]
    logits, router_probs = self._compute_router_probabilities(
        inputs, experts_dim, train, variable_dtype, name)
    candidates = self._compute_routing_instructions(logits, router_probs, experts_dim, train)
    first_choice = mtf.one_hot(candidates[0].expert, experts_dim, dtype=tf.float32) * token_mask
    # eq. 4 counts first choices only (moe.py's NTLB averages f_i over all k choices).
    balance_loss = load_balancing_loss(router_probs, first_choice, token_mask, tokens_dim,
                                       experts_dim)
    choices = assign_slots(candidates, token_mask, experts_dim, expert_capacity_dim,
                           exclusive=self._exclusive_passes)
    routed = choices[0].kept
    for choice in choices[1:]:
      routed += choice.kept
    return RoutingResult(
        choices=choices,
        experts_dim=experts_dim,
        expert_capacity_dim=expert_capacity_dim,
        load_balance_loss=balance_loss,
        z_loss=router_z_loss(logits, token_mask, experts_dim),
        statistics=_statistics(router_probs, first_choice, routed, token_mask, experts_dim))

  def router_logits(self, inputs: mtf.Tensor, experts_dim: mtf.Dimension, train: bool,
                    variable_dtype: mtf.VariableDType, name: str = "router") -> mtf.Tensor:
    """W_r x after the exploration perturbation of x: [groups, tokens, experts] in self.dtype."""
    router_inputs = mtf.cast(inputs, tf.as_dtype(self.dtype))
    policy = self.policy(train)
    if train and policy == "input_jitter":
      router_inputs = mtf.layers.multiplicative_jitter(router_inputs, self.jitter_eps)
    elif train and policy == "input_dropout":
      router_inputs = mtf.dropout(router_inputs, is_training=True,
                                  keep_prob=1.0 - self.input_dropout_rate)
    return mtf.layers.dense(
        router_inputs, experts_dim, reduced_dims=router_inputs.shape.dims[-1:],
        use_bias=False, variable_dtype=variable_dtype,
        kernel_initializer=mtf.layers.VarianceScalingInitializer(scale=self.init_scale),
        name=name)

  def _compute_router_probabilities(self, inputs, experts_dim, train, variable_dtype,
                                    name="router") -> Tuple[mtf.Tensor, mtf.Tensor]:
    """(logits, softmax probabilities), each [groups, tokens_per_group, experts] float32.

    Both are computed in self.dtype and only then widened, so under ``dtype="bfloat16"``
    every value carries bfloat16's rounding while the bookkeeping downstream stays float32.
    """
    logits = self.router_logits(inputs, experts_dim, train, variable_dtype, name=name)
    probs = mtf.softmax(logits, reduced_dim=experts_dim)
    return mtf.to_float(logits), mtf.to_float(probs)

  def _first_choice(self, logits, router_probs, experts_dim, train) -> Candidate:
    """The top-1 (or, under the "sample" policy, sampled) expert and its probability."""
    if self.policy(train) == "sample":
      expert_index = mtf.sample_with_temperature(
          logits, experts_dim, temperature=self.sample_temperature)
      return Candidate(expert_index, mtf.gather(router_probs, expert_index, dim=experts_dim))
    gate, expert_index = mtf.top_1(router_probs, reduced_dim=experts_dim)
    return Candidate(expert_index, gate)

  def _compute_routing_instructions(self, logits, router_probs, experts_dim,
                                    train) -> List[Candidate]:
    """The experts each token asks for, most preferred first ([groups, tokens] each)."""
    raise NotImplementedError


class SwitchRouter(Router):
  """The Switch router: each token goes to its single best expert, weighted by its gate.

  Tokens take capacity slots in token order; a token whose expert is full is dropped (its
  output is zero, so the layer's residual carries it unchanged).

  Args:
    num_overflow_choices: k > 0 turns on No-Token-Left-Behind (App. B): tokens dropped by
      their first choice try their 2nd, ..., (k+1)-th choices in turn, each pass filling only
      capacity left over by the earlier passes, weighted by the router probability of the
      expert that takes them. The load-balance loss still counts first choices only.
    Other arguments: see ``Router``.
  """

  def __init__(self, num_overflow_choices: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.num_overflow_choices = settings.int_in_range(
        "num_overflow_choices", num_overflow_choices, 0, 2 ** 31, what="num_experts - 1")

  def check_num_experts(self, num_experts: int) -> None:
    super().check_num_experts(num_experts)
    settings.int_in_range("num_overflow_choices", self.num_overflow_choices, 0,
                          num_experts - 1, what=f"num_experts - 1 = {num_experts - 1}")

  def _compute_routing_instructions(self, logits, router_probs, experts_dim, train):
    first = self._first_choice(logits, router_probs, experts_dim, train)
    if not self.num_overflow_choices:
      return [first]
    # Rank the experts once; pass j routes still-unplaced tokens to their (j+1)-th choice.
    choices_dim = mtf.Dimension("router_choices", self.num_overflow_choices + 1)
    ranked_probs, ranked_index = mtf.top_k(router_probs, reduced_dim=experts_dim,
                                           k_dim=choices_dim)
    candidates = [first]
    for probs, index in zip(mtf.split(ranked_probs, choices_dim, choices_dim.size)[1:],
                            mtf.split(ranked_index, choices_dim, choices_dim.size)[1:],
                            strict=True):
      # Each split piece keeps a size-1 "router_choices" dimension; drop it.
      candidates.append(Candidate(mtf.reshape(index, index.shape.dims[:-1]),
                                  mtf.reshape(probs, probs.shape.dims[:-1])))
    return candidates


class MoERouter(Router):
  """Top-2 MoE routing: each token goes to its two best experts, gates renormalised to sum 1.

  All first choices take capacity before any second choice, so a second choice never displaces
  a first. The second expert is used always ("all"), never ("none"), when its renormalised
  gate exceeds ``second_threshold`` ("threshold"), or with probability
  min(1, gate_2 / second_threshold) ("random", as in GShard). Exploration policies other than
  "argmax" apply to the router input only; top-2 never samples.

  Args:
    second_policy_train, second_policy_eval: one of SECOND_EXPERT_POLICIES. Evaluation
      defaults to "all" so that it is deterministic.
    second_threshold: the threshold of the "threshold" and "random" policies, in (0, 1].
    policy_train: as for ``Router``, but "argmax" by default and never "sample".
    Other arguments: see ``Router``.
  """

  _exclusive_passes = False

  def __init__(self, second_policy_train: str = "random", second_policy_eval: str = "all",
               second_threshold: float = 0.2, policy_train: str = "argmax", **kwargs):
    super().__init__(policy_train=policy_train, **kwargs)
    self.second_policy_train = settings.one_of("second_policy_train", second_policy_train,
                                               SECOND_EXPERT_POLICIES)
    self.second_policy_eval = settings.one_of("second_policy_eval", second_policy_eval,
                                              SECOND_EXPERT_POLICIES)
    self.second_threshold = settings.number("second_threshold", second_threshold, low=0.0,
                                            high=1.0, low_open=True)
    if "sample" in (self.policy_train, self.policy_eval):
      raise ValueError("router policy 'sample' picks one expert; MoERouter always takes the top 2")

  def check_num_experts(self, num_experts: int) -> None:
    super().check_num_experts(num_experts)
    if num_experts < 2:
      raise ValueError(f"top-2 routing needs at least 2 experts; num_experts={num_experts} "
                       "is too few")

  def _compute_routing_instructions(self, logits, router_probs, experts_dim, train):
    del logits
    gate_1, index_1 = mtf.top_1(router_probs, reduced_dim=experts_dim)
    gate_2, index_2 = mtf.top_1(
        router_probs * (1.0 - mtf.one_hot(index_1, experts_dim, dtype=tf.float32)),
        reduced_dim=experts_dim)
    denominator = gate_1 + gate_2 + 1e-9
    gate_1 /= denominator
    gate_2 /= denominator
    policy = self.second_policy_train if train else self.second_policy_eval
    if policy == "all":
      asks = None
    elif policy == "none":
      asks = mtf.zeros(gate_2.mesh, gate_2.shape, dtype=tf.float32)
    elif policy == "threshold":
      asks = mtf.to_float(mtf.greater(gate_2, self.second_threshold))
    else:  # "random"
      coin = mtf.random_uniform(gate_2.mesh, gate_2.shape, dtype=tf.float32)
      asks = mtf.to_float(mtf.less(coin, gate_2 / self.second_threshold))
    return [Candidate(index_1, gate_1), Candidate(index_2, gate_2, asks)]


def token_mask_from_nonpadding(nonpadding: Optional[object], shape: mtf.Shape,
                               mesh: mtf.Mesh) -> mtf.Tensor:
  """A float32 [<token dims>] mask from Mesh-TF's context.nonpadding (None, 1 or a Tensor)."""
  ones = mtf.ones(mesh, shape, dtype=tf.float32)
  if nonpadding is None or isinstance(nonpadding, (int, float)):
    return ones
  # Mesh-TF marks real tokens 1.0; anything else (0, or fractional importances) is padding.
  return ones * mtf.to_float(mtf.equal(mtf.to_float(nonpadding), 1.0))


SwitchRouter = settings.configurable(SwitchRouter)
MoERouter = settings.configurable(MoERouter)
