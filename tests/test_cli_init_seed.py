"""mtf_switch.init_seed through the t5_mesh_transformer command line: two fresh runs with one
seed start from identical weights.

A file of its own (not in tests/test_cli_end_to_end.py) so that pytest-xdist, which keeps a
file's tests on one worker, runs it beside that file's chain of command-line runs.
"""

import numpy as np
import pytest
import test_cli_end_to_end as e2e  # the same corpus, command line and training bindings


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return e2e.make_workdir(tmp_path_factory.mktemp("e2e_seed"))


def test_init_seed_gives_identical_initial_weights(workdir):
  """Two fresh runs bound to one mtf_switch.init_seed save the same step-0 weights. Without
  the seed reaching the graph they would differ: every run would draw its own init."""
  import tensorflow.compat.v1 as tf

  dirs = [workdir / f"seeded_{i}" for i in range(2)]
  for model_dir in dirs:
    e2e._cli(workdir, model_dir, *e2e.TRAIN, "utils.run.train_steps = 1",
             "mtf_switch.init_seed.seed = 5")
  first, second = (tf.train.load_checkpoint(f"{d}/model.ckpt-0") for d in dirs)
  names = [n for n, _ in tf.train.list_variables(f"{dirs[0]}/model.ckpt-0")]
  weights = [n for n in names if n.endswith("kernel") or n.endswith("embedding")]
  assert weights, names
  for name in names:
    np.testing.assert_array_equal(first.get_tensor(name), second.get_tensor(name), err_msg=name)
  # Not trivially equal: the initial weights are random draws, not constants.
  assert all(np.std(first.get_tensor(n).astype(np.float32)) > 0 for n in weights)
