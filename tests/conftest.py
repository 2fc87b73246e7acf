"""Shared pytest set-up: the compat repair runs before any test imports mesh_tensorflow."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mtf_switch import compat  # noqa: E402,F401
