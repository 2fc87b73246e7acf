"""Shared pytest set-up: the compat repair runs before any test imports mesh_tensorflow, and
the test tiers are decided here.

Two tiers (README "Set up and test"):

    pytest                  the whole suite (what CI runs)
    pytest -m "not slow"    the fast tier: unit, parity and layout tests, no command-line runs

A test is slow when it carries ``@pytest.mark.slow`` itself, or when it lives in one of the
SLOW_FILES below: files whose every test starts ``switch_mesh_transformer`` (TensorFlow) in a
subprocess, or trains models through the reproduction scripts. Marking them here, by file,
keeps the tier decision in one place: a test file needs no edit to join a tier.
"""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mtf_switch import compat  # noqa: E402,F401

# Each of these files' tests runs the command line in subprocesses (tens of seconds each).
SLOW_FILES = frozenset({
    "test_cli_end_to_end.py",
    "test_cli_init_seed.py",
    "test_cli_languages.py",
    "test_compat_and_cli.py",
    "test_repro_scripts.py",
})


def pytest_collection_modifyitems(config, items):
  del config  # the tiers do not depend on options
  for item in items:
    if item.path.name in SLOW_FILES:
      item.add_marker(pytest.mark.slow)
