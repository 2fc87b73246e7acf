"""switch_experiments.replay_routing's pure steps: the batches' digest, the routing scalars read
from summaries, their mean over batches (the replay itself runs in test_repro_scripts.py)."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from switch_experiments import replay_routing


def test_the_digest_names_the_tokens_not_the_order_of_the_features():
  batch = {"inputs": np.array([[5, 6, 1]], np.int32), "targets": np.array([[7, 1]], np.int32)}
  same = {"targets": batch["targets"].copy(), "inputs": batch["inputs"].copy()}
  other = {"inputs": np.array([[5, 6, 2]], np.int32), "targets": batch["targets"]}
  digest = replay_routing.batches_digest([batch])
  assert replay_routing.batches_digest([same]) == digest
  assert replay_routing.batches_digest([other]) != digest
  assert replay_routing.batches_digest([batch, batch]) != digest


def test_only_the_routing_scalars_are_read_from_the_summaries():
  tag = replay_routing.ROUTING_PREFIX + "encoder/block_001/dropped_fraction"
  protos = [tf.Summary(value=[tf.Summary.Value(tag=tag, simple_value=0.25)]).SerializeToString(),
            tf.Summary(value=[tf.Summary.Value(tag="loss", simple_value=3.0)]).SerializeToString()]
  assert replay_routing.routing_scalars(protos) == {tag: 0.25}


def test_the_mean_over_batches_needs_the_same_tags_in_each():
  assert replay_routing.mean_scalars([{"a": 1.0, "b": 0.0}, {"a": 3.0, "b": 1.0}]) == {
      "a": 2.0, "b": 0.5}
  with pytest.raises(ValueError, match=r"different summaries: \['b'\]"):
    replay_routing.mean_scalars([{"a": 1.0}, {"a": 1.0, "b": 2.0}])
