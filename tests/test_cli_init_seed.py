"""mtf_switch.init_seed through the t5_mesh_transformer command line: two fresh runs with one
seed start from identical weights.

The first fresh run is the session's pre-training (tests/e2e/cli.py ``pretrain``, whose first
run binds the seed); the second is started here with the same command line and stopped as soon
as it has saved its step-0 checkpoint, which is all the comparison needs.
"""

import numpy as np

from tests.e2e import cli


def test_init_seed_gives_identical_initial_weights(pretrained):
  """Two fresh runs bound to one mtf_switch.init_seed save the same step-0 weights. Without
  the seed reaching the graph they would differ: every run would draw its own init."""
  import tensorflow.compat.v1 as tf

  assert 0 in pretrained["before"]  # the pre-training's own initial weights were kept
  again = pretrained["workdir"] / "seeded_again"
  cli.run_until_checkpoint(pretrained["workdir"], again, 0, *cli.FRESH_RUN)
  prefixes = [f"{pretrained['model_dir']}/model.ckpt-0", f"{again}/model.ckpt-0"]
  first, second = (tf.train.load_checkpoint(p) for p in prefixes)
  names = [n for n, _ in tf.train.list_variables(prefixes[0])]
  assert names == [n for n, _ in tf.train.list_variables(prefixes[1])]
  weights = [n for n in names if n.endswith("kernel") or n.endswith("embedding")]
  assert weights, names
  for name in names:
    np.testing.assert_array_equal(first.get_tensor(name), second.get_tensor(name), err_msg=name)
  # Not trivially equal: the initial weights are random draws, not constants.
  assert all(np.std(first.get_tensor(n).astype(np.float32)) > 0 for n in weights)
