"""mtf_switch.init_seed reaches the RunConfig that mesh-tensorflow's utils.run builds.

The end-to-end half (two command-line runs with one seed start from identical weights) is in
tests/test_cli_init_seed.py.
"""

import re

import pytest
from mesh_tensorflow.transformer import utils as mtf_utils

import gin
from mtf_switch import seeding


@pytest.fixture(autouse=True, scope="module")
def installed():
  """The wrapper as the command line installs it (switch_cli.patches); importing mtf_switch
  alone does not, which tests/test_compat_and_cli.py checks in a fresh process."""
  seeding.install()


@pytest.fixture
def gin_clean():
  gin.clear_config()
  yield
  gin.clear_config()


def _run_config(tmp_path, **kwargs):
  # The very call utils.run makes, through the module attribute it reads.
  return mtf_utils.tpu_config.RunConfig(model_dir=str(tmp_path), **kwargs)


def test_install_wraps_mesh_tfs_tpu_config_once():
  assert isinstance(mtf_utils.tpu_config, seeding.SeededTpuConfig)
  assert seeding.install() is False
  assert not isinstance(mtf_utils.tpu_config.wrapped, seeding.SeededTpuConfig)
  # Everything else is the real module's.
  assert mtf_utils.tpu_config.TPUConfig is mtf_utils.tpu_config.wrapped.TPUConfig


def test_unbound_seed_leaves_the_run_config_unseeded(gin_clean, tmp_path):
  assert seeding.init_seed() is None
  assert _run_config(tmp_path).tf_random_seed is None


def test_bound_seed_becomes_the_graph_seed(gin_clean, tmp_path):
  gin.parse_config("mtf_switch.init_seed.seed = 7")
  assert _run_config(tmp_path).tf_random_seed == 7
  # A caller that passes its own seed keeps it.
  assert _run_config(tmp_path, tf_random_seed=3).tf_random_seed == 3


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", 2**63])
def test_bad_seed_is_named_in_the_error(gin_clean, tmp_path, bad):
  gin.bind_parameter("mtf_switch.init_seed.seed", bad)
  with pytest.raises(ValueError, match=r"mtf_switch\.init_seed\.seed .* got " + re.escape(repr(bad))):
    _run_config(tmp_path)
