"""Shared pytest set-up: the compat repair runs before any test imports mesh_tensorflow, and
the test tiers are decided here.

Two tiers (README "Set up and test"):

    pytest                  the whole suite (what CI runs)
    pytest -m "not slow"    the fast tier: unit, parity and layout tests, no command-line runs

A test is slow when it carries ``@pytest.mark.slow`` itself, when it lives in one of the
SLOW_FILES below (files whose every test starts ``switch_mesh_transformer`` (TensorFlow) in a
subprocess, or trains models through the reproduction scripts), or when SLOW_TESTS names it. Marking them here, by file,
keeps the tier decision in one place: a test file needs no edit to join a tier.
"""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mtf_switch import compat  # noqa: E402,F401

# Each of these files' tests runs the command line in subprocesses (tens of seconds each).
# Longest first: the whole suite starts them first (see below).
SLOW_FILES = (
    "test_cli_end_to_end.py",   # 7 command-line runs, one chain
    "test_repro_scripts.py",    # 8 command-line runs through the repro scripts
    "test_compat_and_cli.py",   # 3 Python / command-line start-ups
    "test_cli_init_seed.py",    # 2 command-line runs
    "test_cli_bfloat16_and_preflight.py",  # 4 command-line runs (dtype, pre-flight)
    "test_hf_roundtrip.py",     # command-line training, export, import, fine-tuning
)

# Single tests (every parametrisation) that train a whole model in-process for several steps,
# about 20-30 s of CPU each: "file::function".
SLOW_TESTS = frozenset({
    "test_gin_models.py::test_cpu_model_trains_from_its_gin_file",
})


def pytest_collection_modifyitems(config, items):
  """Marks the SLOW_FILES' tests slow, and moves those files to the front.

  pytest-xdist (``--dist loadfile``) hands whole files to the workers in collection order, so
  the long command-line files start first and the many short files fill in around them;
  in collection order (alphabetical) a long file that starts last is the run's tail. Tests
  keep their order within a file.
  """
  del config  # the tiers do not depend on options
  rank = {name: i for i, name in enumerate(SLOW_FILES)}
  for item in items:
    if item.path.name in rank or f"{item.path.name}::{item.originalname}" in SLOW_TESTS:
      item.add_marker(pytest.mark.slow)
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept


@pytest.fixture(autouse=True, scope="module")
def _fresh_gin_config_per_file():
  """Every test file starts and ends with no gin bindings.

  Helpers such as ``mtf_switch.gin_files.parse_gin`` (used by tools/table9.py and
  mtf_switch.convert) parse gin files into gin's one global config; a binding one file leaves behind (an imported HF model's
  ``SwitchFFN.z_loss_coef``, say) would otherwise reach the layers the next file in the same
  worker builds without gin.
  """
  import gin

  gin.clear_config()
  yield
  gin.clear_config()
