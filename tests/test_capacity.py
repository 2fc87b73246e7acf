"""Group and capacity arithmetic, checked by hand."""

import pytest

from mtf_switch import capacity


@pytest.mark.parametrize("num_tokens, max_group_size, shards, expected", [
    (4096, 1024, 1, (4, 1024)),   # exact
    (4096, 1024, 8, (8, 512)),    # the mesh needs more, smaller groups
    (1536, 1024, 1, (2, 768)),    # moe.py would make one group of 1536 > 1024
    (1000, 1024, 1, (1, 1000)),   # fewer tokens than a group
    (96, 40, 2, (4, 24)),         # 3 groups needed, rounded up to a multiple of 2
    (7, 1, 1, (7, 1)),            # groups of one token, when asked for
    (8, 1024, 8, (8, 1)),         # one token per device: nothing else is possible
])
def test_plan_groups_by_hand(num_tokens, max_group_size, shards, expected):
  plan = capacity.plan_groups(num_tokens, max_group_size, shards)
  assert (plan.num_groups, plan.tokens_per_group) == expected
  assert plan.num_tokens == num_tokens
  assert plan.num_groups % shards == 0
  assert plan.tokens_per_group <= max_group_size


@pytest.mark.parametrize("num_tokens, max_group_size, shards, smallest_fix", [
    (7, 4, 1, 7),       # prime: only groups of one fit under 4
    (1031, 1024, 1, 1031),
    (14, 4, 2, 7),      # 7 tokens per device, prime
])
def test_plan_groups_rejects_tokens_that_only_form_one_token_groups(num_tokens, max_group_size,
                                                                   shards, smallest_fix):
  with pytest.raises(ValueError, match=rf"num_tokens={num_tokens} .* groups of 1 token.*"
                                       rf"group_size >= {smallest_fix}"):
    capacity.plan_groups(num_tokens, max_group_size, shards)
  # The suggested group size works.
  assert capacity.plan_groups(num_tokens, smallest_fix, shards).tokens_per_group == smallest_fix


def test_plan_groups_rejects_tokens_that_do_not_tile_the_mesh():
  with pytest.raises(ValueError, match=r"num_tokens=30 .* 4 devices"):
    capacity.plan_groups(30, 16, 4)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None])
def test_plan_groups_rejects_bad_sizes(bad):
  with pytest.raises(ValueError, match="max_group_size"):
    capacity.plan_groups(64, bad, 1)


@pytest.mark.parametrize("tokens, experts, factor, minimum, expected", [
    (1024, 32, 1.25, 4, 40),   # 1024 / 32 * 1.25 = 40 exactly
    (1024, 32, 1.0, 4, 32),
    (1000, 16, 1.0, 4, 63),    # 62.5 -> 63 (moe.py truncates to 62: 992 slots < 1000 tokens)
    (1024, 32, 1.1, 4, 36),    # 35.2 -> 36, not 37 from float noise
    (64, 128, 1.0, 4, 4),      # the minimum
    (3, 2, 1.0, 4, 3),         # never more slots than tokens in the group
    (512, 8, 2.0, 1, 128),
])
def test_expert_capacity_by_hand(tokens, experts, factor, minimum, expected):
  assert capacity.expert_capacity(tokens, experts, factor, minimum) == expected


def test_balanced_share_always_fits_at_capacity_factor_one():
  for tokens in range(1, 300):
    for experts in (1, 2, 3, 7, 16):
      slots = capacity.expert_capacity(tokens, experts, 1.0, 1)
      assert slots * experts >= tokens


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), "1.0", None])
def test_expert_capacity_rejects_bad_capacity_factor(bad):
  with pytest.raises(ValueError, match=r"capacity_factor must be .* got"):
    capacity.expert_capacity(1024, 8, bad)
