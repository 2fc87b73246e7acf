"""Groups and expert capacity: the static sizes of a Switch layer, in plain Python integers.

Everything here is decided at graph-build time, before any tensor exists, so that the dispatch
and combine tensors ([groups, tokens_per_group, experts, expert_capacity]) have static shapes
that TPUs (and Mesh-TF's layout machinery) need.

Two deliberate differences from ``mesh_tensorflow.transformer.moe``, both tested:

* ``plan_groups`` never makes a group larger than ``max_group_size``. moe.py starts from
  ``num_tokens // max_group_size`` groups (rounding down) and so can build groups of up to
  twice the requested size (1536 tokens, max 1024 -> one group of 1536). Group size is the
  knob that bounds the one-hot dispatch cost, so we treat it as a ceiling.
* ``expert_capacity`` rounds up (ceil) where moe.py truncates (int). The paper defines capacity
  as (tokens per group / experts) x capacity factor; truncating makes a capacity factor of 1.0
  give *less* than the balanced share whenever the division is inexact (e.g. 1000 tokens over
  16 experts: 62 slots x 16 = 992 < 1000 tokens, so a perfectly balanced router still drops
  tokens). Rounding up keeps "capacity factor 1.0 = room for perfect balance". Where the
  division is exact the two agree, which is what the parity tests use.
"""

import dataclasses
import math

from mtf_switch import settings


@dataclasses.dataclass(frozen=True)
class GroupPlan:
  """How the tokens of one batch are split into routing groups.

  Attributes:
    num_groups: number of groups; a multiple of the mesh dimension that splits the batch.
    tokens_per_group: tokens in each group; routing and capacity are per group.
  """

  num_groups: int
  tokens_per_group: int

  @property
  def num_tokens(self) -> int:
    return self.num_groups * self.tokens_per_group


def require_positive_int(name: str, value) -> None:
  settings.positive_int(name, value)


def check_capacity_factor(name: str, value) -> float:
  """value, if it is a finite number > 0 (``name`` says which factor, for the message)."""
  return settings.positive_number(name, value)


def plan_groups(num_tokens: int, max_group_size: int, num_group_shards: int = 1) -> GroupPlan:
  """Chooses the fewest groups of at most ``max_group_size`` tokens that tile the mesh.

  Args:
    num_tokens: tokens in the whole batch (batch x length).
    max_group_size: the largest group allowed.
    num_group_shards: size of the mesh dimension the batch (and so the groups) is split over;
      the number of groups must be a multiple of it so every device holds whole groups.

  Returns:
    A GroupPlan with num_groups * tokens_per_group == num_tokens, num_groups a multiple of
    num_group_shards, and tokens_per_group <= max_group_size.

  Raises:
    ValueError: naming the offending value, if the sizes are not positive integers, the
      tokens cannot be split evenly over the mesh dimension, or they only split into groups
      of one token (unless max_group_size is 1, or there is one token per device).
  """
  require_positive_int("num_tokens", num_tokens)
  require_positive_int("max_group_size", max_group_size)
  require_positive_int("num_group_shards", num_group_shards)
  if num_tokens % num_group_shards:
    raise ValueError(
        f"cannot form routing groups: num_tokens={num_tokens} (batch x length) is not divisible "
        f"by the {num_group_shards} devices of the mesh dimension that splits the batch")
  fewest = math.ceil(num_tokens / max_group_size)
  num_groups = math.ceil(fewest / num_group_shards) * num_group_shards
  # Stepping by num_group_shards keeps the mesh constraint; it ends at the latest at
  # num_groups == num_tokens, which divides num_tokens and is a multiple of the shards.
  while num_tokens % num_groups:
    num_groups += num_group_shards
  tokens_per_group = num_tokens // num_groups
  # Groups of one token route nothing (every token gets its expert, capacity 1) and make the
  # one-hot dispatch num_experts times the size of the batch. That is no Switch layer, so it
  # is an error unless asked for (max_group_size=1) or forced (one token per device).
  if tokens_per_group == 1 and max_group_size > 1 and num_tokens > num_group_shards:
    one_group_per_device = num_tokens // num_group_shards
    raise ValueError(
        f"cannot form routing groups: num_tokens={num_tokens} (batch x length) over "
        f"{num_group_shards} device(s) only splits into groups of at most "
        f"group_size={max_group_size} as {num_tokens} groups of 1 token, which would route "
        f"nothing; use a batch x length with a divisor <= {max_group_size} per device, or "
        f"group_size >= {one_group_per_device}")
  return GroupPlan(num_groups=num_groups, tokens_per_group=tokens_per_group)


def expert_capacity(tokens_per_group: int, num_experts: int, capacity_factor: float,
                    min_expert_capacity: int = 4) -> int:
  """Slots per expert per group: ceil(tokens_per_group / num_experts * capacity_factor).

  The result is at least ``min_expert_capacity`` (tiny groups still route something) and at
  most ``tokens_per_group`` (more slots than tokens can never be filled).

  Raises:
    ValueError: naming the offending value, for a capacity factor <= 0 (or not finite) or
      sizes that are not positive integers.
  """
  require_positive_int("tokens_per_group", tokens_per_group)
  require_positive_int("num_experts", num_experts)
  require_positive_int("min_expert_capacity", min_expert_capacity)
  check_capacity_factor("capacity_factor", capacity_factor)
  # The small tolerance keeps float noise (e.g. 1024 * 1.1 / 32) from adding a whole slot.
  capacity = math.ceil(tokens_per_group * capacity_factor / num_experts - 1e-9)
  return min(max(capacity, min_expert_capacity), tokens_per_group)
